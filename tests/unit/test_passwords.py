"""Stored passwords (docs/protocol.md, AddUser): a salted scrypt hash in a self-describing form,
`scrypt$N$r$p$salt$digest`, that a later version (or an operator's tool) can check a password
against; never the password."""

from __future__ import annotations

import hashlib

from manager_gateway.session.passwords import hash_password


def test_the_hash_names_its_parameters_and_a_16_byte_salt() -> None:
    scheme, n, r, p, salt, digest = hash_password("secret123").split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(bytes.fromhex(salt)) == 16
    assert len(bytes.fromhex(digest)) == 64


def test_the_digest_is_scrypt_of_the_password_with_that_salt() -> None:
    """Recomputing scrypt from the stored salt and parameters gives the stored digest: the
    password can be checked later, and only with the password."""
    stored = hash_password("correct horse")
    _, n, r, p, salt, digest = stored.split("$")
    again = hashlib.scrypt(b"correct horse", salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    assert again.hex() == digest
    other = hashlib.scrypt(b"correct horsf", salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    assert other.hex() != digest
    assert "correct horse" not in stored


def test_each_hash_has_its_own_salt() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]


def test_non_ascii_passwords_are_hashed_as_utf8() -> None:
    _, n, r, p, salt, digest = hash_password("pässwörd").split("$")
    expected = hashlib.scrypt(
        "pässwörd".encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p)
    )
    assert expected.hex() == digest
