"""Envelope parsing, frame encoders and the error tree (docs/protocol.md sections 1 and 2)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from manager_gateway.protocol import errors
from manager_gateway.protocol.codec import (
    Envelope,
    EnvelopeError,
    encode,
    encode_error,
    encode_event,
    encode_ok,
    encode_ok_raw,
    parse_request,
)
from manager_gateway.protocol.errors import (
    GatewayError,
    InvalidData,
    InvalidJson,
    InvalidRequest,
    SyncTimeout,
)

# docs/protocol.md section 2, the error table: code -> status.
ERROR_TABLE = {
    "INVALID_JSON": 400,
    "INVALID_REQUEST": 400,
    "UNKNOWN_COMMAND": 404,
    "INVALID_DATA": 400,
    "INVALID_TOKEN": 401,
    "PERMISSION_DENIED": 403,
    "USER_NOT_FOUND": 404,
    "TRADE_NOT_FOUND": 404,
    "GROUP_NOT_FOUND": 404,
    "USER_EXISTS": 409,
    "NOT_ENOUGH_MONEY": 400,
    "NOT_ENOUGH_CREDIT": 400,
    "FRAME_TOO_LARGE": 413,
    "IDEMPOTENCY_MISMATCH": 422,
    "TOO_MANY_REQUESTS": 429,
    "INTERNAL_ERROR": 500,
    "SHUTTING_DOWN": 503,
    "SYNC_TIMEOUT": 504,
}
# The class expected to carry each code.
ERROR_CLASSES = {
    "INVALID_JSON": errors.InvalidJson,
    "INVALID_REQUEST": errors.InvalidRequest,
    "UNKNOWN_COMMAND": errors.UnknownCommand,
    "INVALID_DATA": errors.InvalidData,
    "INVALID_TOKEN": errors.InvalidToken,
    "PERMISSION_DENIED": errors.PermissionDenied,
    "USER_NOT_FOUND": errors.UserNotFound,
    "TRADE_NOT_FOUND": errors.TradeNotFound,
    "GROUP_NOT_FOUND": errors.GroupNotFound,
    "USER_EXISTS": errors.UserExists,
    "NOT_ENOUGH_MONEY": errors.NotEnoughMoney,
    "NOT_ENOUGH_CREDIT": errors.NotEnoughCredit,
    "FRAME_TOO_LARGE": errors.FrameTooLarge,
    "IDEMPOTENCY_MISMATCH": errors.IdempotencyMismatch,
    "TOO_MANY_REQUESTS": errors.TooManyRequests,
    "INTERNAL_ERROR": errors.InternalError,
    "SHUTTING_DOWN": errors.ShuttingDown,
    "SYNC_TIMEOUT": errors.SyncTimeout,
}

RECORD = {
    "order": 42,
    "login": 1001,
    "cmd": 7,
    "state": 3,
    "symbol": "",
    "volume": 0,
    "profit": 300.0,
    "comment": "Promotion credit\r\nline two",
    "open_time": 1700000000,
    "close_time": 1700000000,
    "update_time": 1700000000,
    "reason": 7,
}


def request(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def envelope_error(frame: bytes) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        parse_request(frame)
    return info.value


def assert_one_frame(frame: bytes) -> dict[str, Any]:
    """`frame` ends in CRLF, holds no other line break, and parses back to an object."""
    assert frame.endswith(b"\r\n")
    assert frame.count(b"\n") == 1
    assert frame.count(b"\r") == 1
    decoded = orjson.loads(frame)
    assert isinstance(decoded, dict)
    return decoded


def all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


# ---------------------------------------------------------------- parse_request: valid requests


def test_parse_full_request() -> None:
    """A complete request yields its command, extID, data and token unchanged."""
    frame = (
        b'{"command":"CreditInSync","extID":"credit-req-1001",'
        b'"data":{"login":1001,"amount":300.0,"comment":"Promotion credit"},"__token":"jwt"}'
    )
    assert parse_request(frame) == Envelope(
        command="CreditInSync",
        ext_id="credit-req-1001",
        data={"login": 1001, "amount": 300.0, "comment": "Promotion credit"},
        token="jwt",
    )


def test_parse_without_token() -> None:
    """A request without `__token` parses with token None."""
    envelope = parse_request(request(command="HealthCheck", extID="h1", data={}))
    assert envelope.token is None


def test_ext_id_alias() -> None:
    """`extId` (the old docs' spelling) is accepted as the correlation id."""
    envelope = parse_request(request(command="HealthCheck", extId="old-1"))
    assert envelope.ext_id == "old-1"


def test_ext_id_wins_over_alias() -> None:
    """When both spellings are present, `extID` is the one echoed."""
    envelope = parse_request(request(command="HealthCheck", extID="new", extId="old"))
    assert envelope.ext_id == "new"


def test_absent_data_is_empty_object() -> None:
    """A request without `data` parses with data `{}`."""
    assert parse_request(request(command="SubscribeAll", extID="s1")).data == {}


def test_ext_id_of_128_characters_is_accepted() -> None:
    """An extID of exactly 128 characters is valid."""
    ext_id = "e" * 128
    assert parse_request(request(command="HealthCheck", extID=ext_id)).ext_id == ext_id


def test_ext_id_limit_counts_characters_not_bytes() -> None:
    """128 two-byte characters are within the 128-character limit."""
    ext_id = "\u00e9" * 128
    assert parse_request(request(command="HealthCheck", extID=ext_id)).ext_id == ext_id


def test_parse_tolerates_whitespace_between_tokens() -> None:
    """Insignificant JSON whitespace in a frame is fine."""
    envelope = parse_request(b' { "command" : "HealthCheck" , "extID" : "w" } ')
    assert (envelope.command, envelope.ext_id, envelope.data) == ("HealthCheck", "w", {})


# ---------------------------------------------------------------- parse_request: INVALID_JSON


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"command":"HealthCheck","extID":"x",}', id="trailing-comma"),
        pytest.param(b"{'command':'HealthCheck'}", id="single-quotes"),
        pytest.param(b'{"command":"HealthCheck","extID":"x"} {}', id="two-values"),
        pytest.param(b'{"extID":"\xff","command":"HealthCheck"}', id="invalid-utf8"),
        pytest.param(b'{"extID":"\xc3","command":"HealthCheck"}', id="truncated-utf8"),
        pytest.param(b'{"extID":"\xed\xa0\x80","command":"HealthCheck"}', id="utf8-surrogate"),
        pytest.param(b'{"extID":"\\ud800","command":"HealthCheck"}', id="lone-high-surrogate"),
        pytest.param(b'{"extID":"\\udc00","command":"HealthCheck"}', id="lone-low-surrogate"),
        pytest.param(b'{"extID":"x","command":"C","data":{"amount":NaN}}', id="nan"),
        pytest.param(b'{"extID":"x","command":"C","data":{"amount":Infinity}}', id="infinity"),
        pytest.param(b'{"extID":"x","command":"C","data":{"amount":-Infinity}}', id="-infinity"),
        pytest.param(b'{"extID":"x","command":"C","data":{"amount":1e400}}', id="1e400"),
        pytest.param(b'{"extID":"x","command":"C","data":{"amount":-1e400}}', id="-1e400"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-array"),
        pytest.param(
            b'{"extID":"x","command":"C","data":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
            id="deep-object",
        ),
    ],
)
def test_invalid_json_is_refused_without_ext_id(frame: bytes) -> None:
    """Unparseable frames raise 400 INVALID_JSON answered under extID null."""
    exc = envelope_error(frame)
    assert type(exc.error) is InvalidJson
    assert (exc.error.status, exc.error.code) == (400, "INVALID_JSON")
    assert exc.ext_id is None


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b'[{"command":"HealthCheck","extID":"x"}]', id="array"),
        pytest.param(b'"HealthCheck"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"true", id="bool"),
        pytest.param(b"null", id="null"),
    ],
)
def test_non_object_is_invalid_json(frame: bytes) -> None:
    """A top-level array or scalar is 400 INVALID_JSON with extID null."""
    exc = envelope_error(frame)
    assert type(exc.error) is InvalidJson
    assert (exc.error.status, exc.error.code) == (400, "INVALID_JSON")
    assert exc.ext_id is None


# ---------------------------------------------------------------- parse_request: INVALID_REQUEST


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="missing"),
        pytest.param({"extID": None}, id="null"),
        pytest.param({"extID": 17}, id="int"),
        pytest.param({"extID": 1.5}, id="float"),
        pytest.param({"extID": True}, id="bool"),
        pytest.param({"extID": ["a"]}, id="array"),
        pytest.param({"extID": {"id": "a"}}, id="object"),
        pytest.param({"extID": ""}, id="empty"),
        pytest.param({"extID": "e" * 129}, id="129-chars"),
        pytest.param({"extId": 17}, id="alias-int"),
        pytest.param({"extId": ""}, id="alias-empty"),
    ],
)
def test_bad_ext_id_is_invalid_request_without_ext_id(fields: dict[str, Any]) -> None:
    """A missing or invalid extID is 400 INVALID_REQUEST answered under extID null."""
    exc = envelope_error(request(command="HealthCheck", **fields))
    assert type(exc.error) is InvalidRequest
    assert (exc.error.status, exc.error.code) == (400, "INVALID_REQUEST")
    assert exc.ext_id is None


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="missing"),
        pytest.param({"command": None}, id="null"),
        pytest.param({"command": 6}, id="int"),
        pytest.param({"command": True}, id="bool"),
        pytest.param({"command": ["BalanceIn"]}, id="array"),
        pytest.param({"command": {"name": "BalanceIn"}}, id="object"),
    ],
)
def test_bad_command_is_invalid_request_with_ext_id(fields: dict[str, Any]) -> None:
    """A missing or non-string command is 400 INVALID_REQUEST echoing the extID."""
    exc = envelope_error(request(extID="req-7", **fields))
    assert type(exc.error) is InvalidRequest
    assert (exc.error.status, exc.error.code) == (400, "INVALID_REQUEST")
    assert exc.ext_id == "req-7"


def test_bad_command_echoes_alias_ext_id() -> None:
    """The extID echoed on an envelope error may come from the `extId` alias."""
    exc = envelope_error(request(extId="old-7"))
    assert exc.ext_id == "old-7"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([1, 2], id="array"),
        pytest.param("login=1", id="string"),
        pytest.param(1001, id="int"),
        pytest.param(True, id="bool"),
    ],
)
def test_non_object_data_is_invalid_request_with_ext_id(data: object) -> None:
    """`data` that is not an object is 400 INVALID_REQUEST echoing the extID."""
    exc = envelope_error(request(command="BalanceIn", extID="req-8", data=data))
    assert type(exc.error) is InvalidRequest
    assert (exc.error.status, exc.error.code) == (400, "INVALID_REQUEST")
    assert exc.ext_id == "req-8"


def test_envelope_error_message_is_the_error_message() -> None:
    """EnvelopeError's text is the wrapped error's message."""
    exc = envelope_error(b"[]")
    assert str(exc) == exc.error.message
    assert exc.error.message


def test_envelope_error_encodes_with_null_ext_id() -> None:
    """An unparseable frame's answer is an error frame with `"extID": null`."""
    exc = envelope_error(b"{nope")
    decoded = assert_one_frame(encode_error(exc.error, exc.ext_id))
    assert decoded["extID"] is None
    assert (decoded["status"], decoded["error"]) == (400, "INVALID_JSON")


# ---------------------------------------------------------------- encoders


def test_encode_ok() -> None:
    """encode_ok writes one CRLF frame `{"extID", "status": 200, "data"}`."""
    frame = encode_ok("r1", {"accepted": True, "order": 5, "comment": "a\nb\r\nc"})
    assert assert_one_frame(frame) == {
        "extID": "r1",
        "status": 200,
        "data": {"accepted": True, "order": 5, "comment": "a\nb\r\nc"},
    }


@pytest.mark.parametrize("data", [[1, 2, 3], "ok", {}, []], ids=["array", "string", "{}", "[]"])
def test_encode_ok_other_data_shapes(data: object) -> None:
    """encode_ok carries arrays and strings as `data` too."""
    assert assert_one_frame(encode_ok("r2", data)) == {"extID": "r2", "status": 200, "data": data}


def test_encode_ok_raw() -> None:
    """encode_ok_raw splices pre-encoded data into one CRLF success frame."""
    frame = encode_ok_raw('q"uote\nid', orjson.dumps(RECORD))
    decoded = assert_one_frame(frame)
    assert decoded == {"extID": 'q"uote\nid', "status": 200, "data": RECORD}
    assert "event" not in decoded


def test_encode_ok_raw_matches_encode_ok() -> None:
    """A success frame built from raw bytes is byte-identical to one built from the object."""
    assert encode_ok_raw("r3", orjson.dumps(RECORD)) == encode_ok("r3", RECORD)


def test_encode_error_without_data() -> None:
    """encode_error writes extID, status, error and message, and no `data` key."""
    decoded = assert_one_frame(encode_error(InvalidData("login is required"), "r4"))
    assert decoded == {
        "extID": "r4",
        "status": 400,
        "error": "INVALID_DATA",
        "message": "login is required",
    }


def test_encode_error_with_data() -> None:
    """encode_error includes `data` when the error carries some (SYNC_TIMEOUT's order)."""
    error = SyncTimeout(data={"order": 77})
    decoded = assert_one_frame(encode_error(error, "r5"))
    assert decoded == {
        "extID": "r5",
        "status": 504,
        "error": "SYNC_TIMEOUT",
        "message": SyncTimeout.default_message,
        "data": {"order": 77},
    }


def test_encode_error_with_null_ext_id() -> None:
    """An error answered without a valid extID carries `"extID": null`."""
    decoded = assert_one_frame(encode_error(InvalidJson("bad\njson"), None))
    assert decoded == {
        "extID": None,
        "status": 400,
        "error": "INVALID_JSON",
        "message": "bad\njson",
    }


@pytest.mark.parametrize("code", sorted(ERROR_CLASSES))
def test_error_frames_never_carry_event(code: str) -> None:
    """No error frame, of any class, contains an `event` key."""
    decoded = assert_one_frame(encode_error(ERROR_CLASSES[code](data={"order": 1}), "r6"))
    assert "event" not in decoded
    assert decoded["error"] == code


@pytest.mark.parametrize("event_type", [0, 1, 2])
def test_encode_trade_event(event_type: int) -> None:
    """encode_event writes `{"event", "type", "data"}` in one CRLF frame, with no extID."""
    decoded = assert_one_frame(encode_event("trade:event", event_type, orjson.dumps(RECORD)))
    assert decoded == {"event": "trade:event", "type": event_type, "data": RECORD}
    assert "extID" not in decoded


def test_encode_balance_event() -> None:
    """A balance event frame round-trips exactly and carries no extID."""
    data = {
        "login": 1001,
        "balance": 300.0,
        "credit": 0.0,
        "equity": 300.0,
        "margin": 0.0,
        "margin_free": 300.0,
        "margin_level": 0.0,
    }
    frame = encode_event("balance:event", 1, orjson.dumps(data))
    decoded = assert_one_frame(frame)
    assert decoded == {"event": "balance:event", "type": 1, "data": data}
    assert "extID" not in decoded


def test_encode_generic_object() -> None:
    """encode writes any object as one compact CRLF frame."""
    frame = encode({"a": [1, {"b": "x\ny"}]})
    assert frame == b'{"a":[1,{"b":"x\\ny"}]}\r\n'


# ---------------------------------------------------------------- the error tree


def test_every_error_class_matches_the_protocol_table() -> None:
    """The GatewayError subclasses carry exactly the codes and statuses of the section 2 table."""
    found = {cls.code: cls.status for cls in all_subclasses(GatewayError)}
    assert found == ERROR_TABLE


@pytest.mark.parametrize("code", sorted(ERROR_TABLE))
def test_error_class_status_and_code(code: str) -> None:
    """Each named error class carries its table status and code, on the class and instances."""
    cls = ERROR_CLASSES[code]
    assert issubclass(cls, GatewayError)
    assert (cls.status, cls.code) == (ERROR_TABLE[code], code)
    error = cls()
    assert (error.status, error.code) == (ERROR_TABLE[code], code)
    assert error.message == cls.default_message
    assert error.message


def test_base_error_is_internal_error() -> None:
    """An unspecialised GatewayError answers 500 INTERNAL_ERROR."""
    assert (GatewayError.status, GatewayError.code) == (500, "INTERNAL_ERROR")


def test_to_wire_shape_without_data() -> None:
    """to_wire gives exactly extID, status, error and message when there is no data."""
    assert errors.UserNotFound("user 5 not found").to_wire("r9") == {
        "extID": "r9",
        "status": 404,
        "error": "USER_NOT_FOUND",
        "message": "user 5 not found",
    }


def test_to_wire_shape_with_data() -> None:
    """to_wire adds `data` when the error carries it."""
    assert errors.SyncTimeout("late", data={"order": 3}).to_wire(None) == {
        "extID": None,
        "status": 504,
        "error": "SYNC_TIMEOUT",
        "message": "late",
        "data": {"order": 3},
    }


def test_error_str_is_message() -> None:
    """A GatewayError's str() is its message, custom or default."""
    assert str(errors.PermissionDenied("no")) == "no"
    assert str(errors.PermissionDenied()) == errors.PermissionDenied.default_message
