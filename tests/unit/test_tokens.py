"""Session tokens: HS256 issue/verify, every way a token is refused, and the signing secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from manager_gateway.protocol.errors import InvalidToken
from manager_gateway.session.access import SessionType
from manager_gateway.session.tokens import SECRET_FILE, TokenService, load_or_create_secret

from .conftest import SECRET

NOW = 1_800_000_000.0
LATER = int(NOW) + 3600


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None = SECRET) -> str:
    """A JWT built by hand: signed with HMAC-SHA256 when `secret` is given, else unsigned."""
    signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "42", "type": 1, "groups": ["demo*"], "exp": LATER}
    claims.update(changes)
    return claims


def test_issue_verify_round_trip(tokens: TokenService) -> None:
    """A token issued by the service verifies into the same subject, type, groups and expiry."""
    token = tokens.issue("1001", SessionType.DEALER, ["demo*", "real"], LATER)
    access = tokens.verify(token, NOW)
    assert access.subject == "1001"
    assert access.type is SessionType.DEALER
    assert access.groups == ("demo*", "real")
    assert access.expires_at == float(LATER)


@pytest.mark.parametrize("session_type", list(SessionType))
def test_every_session_type_round_trips(tokens: TokenService, session_type: SessionType) -> None:
    """Each type 0..5 is a valid token type (SYSTEM and FIX are refused later, by role)."""
    access = tokens.verify(tokens.issue("7", session_type, ["*"], LATER), NOW)
    assert access.type is session_type


def test_hand_built_hs256_token_verifies(tokens: TokenService) -> None:
    """A correctly signed token built by hand verifies, so the forge helper is sound."""
    access = tokens.verify(forge({"alg": "HS256", "typ": "JWT"}, good_claims()), NOW)
    assert (access.subject, access.type, access.groups) == ("42", SessionType.MANAGER, ("demo*",))


def test_groups_default_to_all(tokens: TokenService) -> None:
    """A token without `groups` gets the default mask list ["*"]."""
    claims = good_claims()
    del claims["groups"]
    access = tokens.verify(forge({"alg": "HS256", "typ": "JWT"}, claims), NOW)
    assert access.groups == ("*",)


def test_expiry_boundary(tokens: TokenService) -> None:
    """A token is valid one second before `exp` and invalid at `exp` and after it."""
    token = tokens.issue("42", SessionType.MANAGER, ["*"], LATER)
    assert tokens.verify(token, LATER - 1).expires_at == LATER
    with pytest.raises(InvalidToken):
        tokens.verify(token, LATER)
    with pytest.raises(InvalidToken):
        tokens.verify(token, LATER + 1)


def test_not_yet_valid_token_refused_until_its_time(tokens: TokenService) -> None:
    """A token whose `nbf` is in the future (on the gateway's clock) is refused until then."""
    token = forge({"alg": "HS256", "typ": "JWT"}, good_claims(nbf=NOW + 60), secret=SECRET)
    with pytest.raises(InvalidToken, match="not valid yet"):
        tokens.verify(token, NOW)
    assert tokens.verify(token, NOW + 60).subject == good_claims()["sub"]


@pytest.mark.parametrize("nbf", ["soon", True, None, [1]], ids=["string", "bool", "null", "list"])
def test_malformed_not_before_refused(tokens: TokenService, nbf: object) -> None:
    """An `nbf` that is not a number is refused (a null one counts as absent)."""
    token = forge({"alg": "HS256", "typ": "JWT"}, good_claims(nbf=nbf), secret=SECRET)
    if nbf is None:
        assert tokens.verify(token, NOW)
        return
    with pytest.raises(InvalidToken):
        tokens.verify(token, NOW)


def test_wrong_signature_refused(tokens: TokenService) -> None:
    """A token signed with another secret is refused."""
    other = TokenService(b"another-secret-of-at-least-32-bytes!!")
    token = other.issue("42", SessionType.ADMIN, ["*"], LATER)
    with pytest.raises(InvalidToken):
        tokens.verify(token, NOW)


def test_alg_none_refused(tokens: TokenService) -> None:
    """An unsigned `alg: none` token with otherwise valid claims is refused."""
    token = forge({"alg": "none", "typ": "JWT"}, good_claims(type=3), secret=None)
    with pytest.raises(InvalidToken):
        tokens.verify(token, NOW)


def test_tampered_claims_refused(tokens: TokenService) -> None:
    """Swapping the claims of a validly signed token for ADMIN ones breaks the signature."""
    token = tokens.issue("42", SessionType.USER, ["*"], LATER)
    header, _, signature = token.split(".")
    forged_claims = _b64(orjson.dumps(good_claims(type=3, groups=["*"])))
    with pytest.raises(InvalidToken):
        tokens.verify(f"{header}.{forged_claims}.{signature}", NOW)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"type": 1, "groups": ["*"], "exp": LATER}, id="missing-sub"),
        pytest.param({"sub": "42", "type": 1, "groups": ["*"]}, id="missing-exp"),
        pytest.param(good_claims(exp=int(NOW)), id="exp-equals-now"),
        pytest.param(good_claims(exp=int(NOW) - 1), id="expired"),
        pytest.param(good_claims(exp="9999999999"), id="exp-as-string"),
        pytest.param(good_claims(exp=True), id="exp-as-bool"),
        pytest.param(good_claims(type=6), id="type-6"),
        pytest.param(good_claims(type=-1), id="type-negative"),
        pytest.param(good_claims(type=True), id="type-bool"),
        pytest.param(good_claims(type="1"), id="type-str"),
        pytest.param(good_claims(type=1.5), id="type-fraction"),
        pytest.param(good_claims(type=None), id="type-null"),
        pytest.param({k: v for k, v in good_claims().items() if k != "type"}, id="missing-type"),
        pytest.param(good_claims(groups="demo*"), id="groups-string"),
        pytest.param(good_claims(groups={"demo": 1}), id="groups-object"),
        pytest.param(good_claims(groups=[1]), id="groups-non-string-item"),
        pytest.param(good_claims(groups=[""]), id="groups-empty-mask"),
    ],
)
def test_bad_claims_refused(tokens: TokenService, claims: dict[str, Any]) -> None:
    """A correctly signed token with missing or ill-typed claims is refused."""
    token = forge({"alg": "HS256", "typ": "JWT"}, claims)
    with pytest.raises(InvalidToken):
        tokens.verify(token, NOW)


@pytest.mark.parametrize(
    "token",
    [None, 12345, b"a.b.c", ["a.b.c"], {"token": "x"}, "", "not-a-jwt", "a.b.c"],
    ids=["none", "int", "bytes", "list", "dict", "empty", "garbage", "three-garbage-parts"],
)
def test_non_tokens_refused(tokens: TokenService, token: object) -> None:
    """Anything that is not a well-formed JWT string is refused with InvalidToken."""
    with pytest.raises(InvalidToken) as caught:
        tokens.verify(token, NOW)
    assert caught.value.status == 401
    assert caught.value.code == "INVALID_TOKEN"


def test_missing_token_message(tokens: TokenService) -> None:
    """A None token is reported as missing, not as malformed."""
    with pytest.raises(InvalidToken, match="missing token"):
        tokens.verify(None, NOW)


def test_pyjwt_decodes_issued_token_as_hs256(tokens: TokenService) -> None:
    """Issued tokens are plain HS256 JWTs with the documented claims."""
    token = tokens.issue("42", SessionType.MANAGER, ["demo"], LATER)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sub": "42", "type": 1, "groups": ["demo"], "exp": LATER}


def test_short_secret_refused() -> None:
    """A secret under 32 bytes is refused; exactly 32 bytes is accepted."""
    with pytest.raises(ValueError):
        TokenService(b"x" * 31)
    service = TokenService(b"x" * 32)
    token = service.issue("1", SessionType.ADMIN, ["*"], LATER)
    assert service.verify(token, NOW).type is SessionType.ADMIN


def test_secret_file_created_with_mode_0600(tmp_path: Path) -> None:
    """The first call creates the data dir and a 0600 secret file holding the returned secret."""
    data_dir = tmp_path / "data"
    secret = load_or_create_secret(data_dir)
    path = data_dir / SECRET_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().strip() == secret
    assert len(secret) >= 32
    TokenService(secret)  # long enough to be used


def test_secret_file_reused(tmp_path: Path) -> None:
    """A second call returns the same secret and leaves the file unchanged."""
    first = load_or_create_secret(tmp_path)
    before = (tmp_path / SECRET_FILE).read_bytes()
    second = load_or_create_secret(tmp_path)
    assert second == first
    assert (tmp_path / SECRET_FILE).read_bytes() == before


def test_existing_secret_file_is_used(tmp_path: Path) -> None:
    """A secret already in the data dir (e.g. shared by operators) is read, whitespace stripped."""
    (tmp_path / SECRET_FILE).write_bytes(SECRET + b"\n")
    assert load_or_create_secret(tmp_path) == SECRET


def test_tokens_survive_restart(tmp_path: Path) -> None:
    """A token issued with the stored secret verifies with a service built from it again."""
    issuer = TokenService(load_or_create_secret(tmp_path))
    token = issuer.issue("9", SessionType.MANAGER, ["*"], LATER)
    access = TokenService(load_or_create_secret(tmp_path)).verify(token, NOW)
    assert access.subject == "9"
