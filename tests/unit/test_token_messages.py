"""Why a token is refused, word for word (the 401's `message` names what is wrong with the token,
docs/protocol.md section 3), times judged on the gateway's clock only, and the signing secret
the gateway creates."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from manager_gateway.protocol.errors import InvalidToken
from manager_gateway.session.access import SessionType
from manager_gateway.session.tokens import SECRET_FILE, TokenService, load_or_create_secret

from .test_tokens import NOW, forge, good_claims

HS256 = {"alg": "HS256", "typ": "JWT"}


def refusal(tokens: TokenService, token: object, now: float = NOW) -> str:
    with pytest.raises(InvalidToken) as raised:
        tokens.verify(token, now)
    return raised.value.message


@pytest.mark.parametrize("token", [12345, "", b"a.b.c", ["a.b.c"]])
def test_a_token_that_is_not_a_string_says_so(tokens: TokenService, token: object) -> None:
    assert refusal(tokens, token) == "token must be a string"
    assert refusal(tokens, None) == "missing token"


def test_a_valid_token_as_bytes_is_still_not_a_string(tokens: TokenService) -> None:
    token = tokens.issue("42", SessionType.MANAGER, ["*"], int(NOW) + 60)
    assert tokens.verify(token, NOW).subject == "42"
    assert refusal(tokens, token.encode()) == "token must be a string"


@pytest.mark.parametrize(
    ("token", "reason"),
    [("not-a-jwt", "Not enough segments"), ("a.b.c", "Invalid header padding")],
)
def test_an_unreadable_token_says_why(tokens: TokenService, token: str, reason: str) -> None:
    assert refusal(tokens, token) == f"invalid token: {reason}"


def test_a_token_signed_with_another_secret_says_so(tokens: TokenService) -> None:
    other = TokenService(b"another-secret-of-at-least-32-bytes!!")
    token = other.issue("42", SessionType.ADMIN, ["*"], int(NOW) + 60)
    assert refusal(tokens, token) == "invalid token: Signature verification failed"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (good_claims(exp=int(NOW)), "token expired"),
        (good_claims(exp="soon"), "token expired"),
        (good_claims(nbf=NOW + 1), "token not valid yet"),
        (good_claims(nbf="soon"), "token not valid yet"),
        (good_claims(type=6), "token type is not a session type"),
        (good_claims(type=True), "token type is not a session type"),
        (good_claims(groups="demo*"), "token groups must be a list of masks"),
        (good_claims(groups=[""]), "token groups must be a list of masks"),
    ],
)
def test_each_bad_claim_is_named(
    tokens: TokenService, claims: dict[str, object], message: str
) -> None:
    assert refusal(tokens, forge(HS256, claims)) == message


def test_times_are_judged_on_the_gateways_clock_not_the_wall(tokens: TokenService) -> None:
    """A gateway whose clock says 2001 accepts a token expiring in 2001, however late the wall
    clock is; and an issued-at time in the wall's future is no reason to refuse."""
    then = 1_000_000_000.0
    expired_by_the_wall = forge(HS256, good_claims(exp=int(then) + 100))
    assert tokens.verify(expired_by_the_wall, then).expires_at == then + 100
    issued_in_the_future = forge(HS256, good_claims(iat=int(time.time()) + 86_400))
    assert tokens.verify(issued_in_the_future, NOW).subject == "42"


def test_a_short_secret_is_refused_saying_how_long_it_must_be() -> None:
    with pytest.raises(ValueError, match=r"^the JWT secret must be at least 32 bytes$"):
        TokenService(b"x" * 31)


def test_a_new_secret_is_32_random_bytes_in_hex_in_a_new_directory(tmp_path: Path) -> None:
    """The data dir is created with its parents; the secret is 64 hex characters (32 random
    bytes), kept in the file with a newline, and different for each new data dir."""
    first = load_or_create_secret(tmp_path / "a" / "b" / "data")
    second = load_or_create_secret(tmp_path / "other")
    assert re.fullmatch(rb"[0-9a-f]{64}", first)
    assert (tmp_path / "a" / "b" / "data" / SECRET_FILE).read_bytes() == first + b"\n"
    assert second != first
