"""What an unusable envelope is answered with, word for word, and the wire form of a `,` before a
closing bracket inside a string (docs/protocol.md sections 1 and 2): `message` names what is
wrong with the frame, so a client's developer can fix it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from manager_gateway.protocol.codec import EnvelopeError, encode, encode_ok, parse_request
from manager_gateway.protocol.errors import FrameTooLarge


def refused(frame: bytes) -> tuple[str, str, str | None]:
    """(error code, message, extID answered under) for a frame parse_request refuses."""
    with pytest.raises(EnvelopeError) as raised:
        parse_request(frame)
    return raised.value.error.code, raised.value.error.message, raised.value.ext_id


def frame(**fields: Any) -> bytes:
    return orjson.dumps(fields)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "Input is a zero-length, empty document"),
        (b"{", "unexpected end of data"),  # the example of docs/protocol.md section 10
        (b'{"extID":"x",}', "trailing comma is not allowed"),
    ],
)
def test_invalid_json_says_why(raw: bytes, reason: str) -> None:
    assert refused(raw) == ("INVALID_JSON", f"invalid JSON: {reason}", None)


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"HealthCheck"', b"7"])
def test_a_request_must_be_an_object(raw: bytes) -> None:
    assert refused(raw) == ("INVALID_JSON", "a request must be a JSON object", None)


def test_a_missing_ext_id_is_named_missing() -> None:
    for raw in (frame(command="HealthCheck"), frame(command="HealthCheck", extID=None)):
        assert refused(raw) == ("INVALID_REQUEST", "extID is missing", None)


@pytest.mark.parametrize("ext_id", ["", "e" * 129, 17, True, ["a"]])
def test_an_unusable_ext_id_says_what_it_must_be(ext_id: object) -> None:
    msg = "extID is not a string of 1 to 128 characters"
    assert refused(frame(command="HealthCheck", extID=ext_id)) == ("INVALID_REQUEST", msg, None)
    assert refused(frame(command="HealthCheck", extId=ext_id)) == ("INVALID_REQUEST", msg, None)


@pytest.mark.parametrize("command", [None, "", 6, ["HealthCheck"]])
def test_a_bad_command_is_named(command: object) -> None:
    fields = {"extID": "e-1"} if command is None else {"extID": "e-1", "command": command}
    msg = "command must be a non-empty string"
    assert refused(frame(**fields)) == ("INVALID_REQUEST", msg, "e-1")


@pytest.mark.parametrize("data", [[1], "login=1", 1001, False])
def test_data_that_is_not_an_object_is_named(data: object) -> None:
    raw = frame(extID="e-2", command="BalanceIn", data=data)
    assert refused(raw) == ("INVALID_REQUEST", "data must be a JSON object", "e-2")


@pytest.mark.parametrize(
    ("comment", "wire"),
    [
        ("a,}", b"a\\u002c}"),
        ("a,]", b"a\\u002c]"),
        ("a,  }", b"a\\u002c  }"),
        ("}a,}", b"}a\\u002c}"),
    ],
)
def test_a_comma_before_a_closer_in_a_string_is_escaped_in_any_frame(
    comment: str, wire: bytes
) -> None:
    """The clients' repair would delete such a comma: it is written `\\u002c` (lower case, as
    docs/protocol.md section 1 spells it), also in a frame with no list and one object."""
    assert encode({"comment": comment}) == b'{"comment":"' + wire + b'"}\r\n'
    assert encode_ok("x", {"comment": comment}) == (
        b'{"extID":"x","status":200,"data":{"comment":"' + wire + b'"}}\r\n'
    )
    assert orjson.loads(encode({"comment": comment})) == {"comment": comment}


def test_frame_too_large_carries_its_message_data_and_the_frames_before_it() -> None:
    """Like every GatewayError, a FrameTooLarge is answered with its own message and data when
    given them; `completed` holds the frames finished before the oversized one, [] by default."""
    plain = FrameTooLarge()
    assert (plain.message, plain.data, plain.completed) == (
        "frame exceeds max_frame_bytes",
        None,
        [],
    )
    told = FrameTooLarge("frame of 2000000 bytes", data={"max": 1024}, completed=[b"{}"])
    assert told.to_wire("e-3") == {
        "extID": "e-3",
        "status": 413,
        "error": "FRAME_TOO_LARGE",
        "message": "frame of 2000000 bytes",
        "data": {"max": 1024},
    }
    assert told.completed == [b"{}"]
