"""Account passwords: stored only as a salted scrypt hash (slow on purpose)."""

from __future__ import annotations

import hashlib
import secrets

# scrypt cost: n=2**14, r=8 takes tens of milliseconds and 16 MiB, the usual interactive setting.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"
