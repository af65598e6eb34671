"""HS256 session tokens: issue, verify, and the secret they are signed with."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TypeGuard

import jwt

from ..protocol.errors import InvalidToken
from .access import Access, SessionType

SECRET_FILE = "jwt.secret"
_SESSION_TYPES = frozenset(int(t) for t in SessionType)
ALGORITHM = "HS256"


def load_or_create_secret(data_dir: Path) -> bytes:
    """The signing secret kept in the data dir, created (mode 0600) on first use."""
    path = data_dir / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    # O_EXCL: two processes starting at once must not both write a different secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    return secret


def _is_time(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TokenService:
    """Signs and verifies session tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        self._secret = secret

    def issue(
        self, subject: str, session_type: SessionType, groups: list[str], expires_at: int
    ) -> str:
        claims = {"sub": subject, "type": int(session_type), "groups": groups, "exp": expires_at}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: object, now: float) -> Access:
        """Check signature, expiry and claims; `InvalidToken` says what is wrong."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("missing token" if token is None else "token must be a string")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                # Times are checked below against `now`, the gateway's clock, not the wall's.
                options={
                    "require": ["exp", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc
        exp, kind, groups = claims.get("exp"), claims.get("type"), claims.get("groups", ["*"])
        if not _is_time(exp) or exp <= now:
            raise InvalidToken("token expired")
        not_before = claims.get("nbf")
        if not_before is not None and (not _is_time(not_before) or not_before > now):
            raise InvalidToken("token not valid yet")
        if not isinstance(kind, int) or isinstance(kind, bool) or kind not in _SESSION_TYPES:
            raise InvalidToken("token type is not a session type")
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise InvalidToken("token groups must be a list of masks")
        return Access(str(claims["sub"]), SessionType(kind), tuple(groups), float(exp))
