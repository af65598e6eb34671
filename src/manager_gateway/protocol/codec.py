"""Envelopes: parse a request frame, encode responses and pushed events.

The envelope is parsed with orjson before anything else so that the `extID` can be echoed even when
the rest of the request is wrong. Encoders return complete frames, `\\r\\n` included; a record is
encoded once and its bytes spliced into every frame that carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import GatewayError, InvalidJson, InvalidRequest

TERMINATOR = b"\r\n"
#: Longest accepted `extID`, in characters.
MAX_EXT_ID_CHARS = 128


@dataclass(slots=True, frozen=True)
class Envelope:
    """A request whose envelope is valid; `data` is not validated yet."""

    command: str
    ext_id: str
    data: dict[str, Any]
    token: object  # None when absent; anything else is checked by the session layer


class EnvelopeError(Exception):
    """A request that cannot be dispatched, with the `extID` to answer it under (maybe None)."""

    def __init__(self, error: GatewayError, ext_id: str | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.ext_id = ext_id


def _valid_ext_id(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_EXT_ID_CHARS:
        return value
    return None


def parse_request(frame: bytes) -> Envelope:
    """Parse one frame into an `Envelope`, or raise `EnvelopeError`."""
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(InvalidJson(f"invalid JSON: {exc.msg}"), None) from exc
    if not isinstance(obj, dict):
        raise EnvelopeError(InvalidJson("a request must be a JSON object"), None)
    raw_ext_id = obj.get("extID", obj.get("extId"))
    ext_id = _valid_ext_id(raw_ext_id)
    if ext_id is None:
        what = "missing" if raw_ext_id is None else "not a string of 1 to 128 characters"
        raise EnvelopeError(InvalidRequest(f"extID is {what}"), None)
    command = obj.get("command")
    if not isinstance(command, str) or not command:
        raise EnvelopeError(InvalidRequest("command must be a non-empty string"), ext_id)
    data = obj.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise EnvelopeError(InvalidRequest("data must be a JSON object"), ext_id)
    return Envelope(command, ext_id, data, obj.get("__token"))


def encode(obj: Any) -> bytes:
    """One frame holding `obj`."""
    return orjson.dumps(obj) + TERMINATOR


def encode_ok(ext_id: str, data: Any) -> bytes:
    return orjson.dumps({"extID": ext_id, "status": 200, "data": data}) + TERMINATOR


def encode_ok_raw(ext_id: str, data_json: bytes) -> bytes:
    """A success frame around already-encoded `data` (a Sync answer reuses the event's bytes)."""
    return b'{"extID":' + orjson.dumps(ext_id) + b',"status":200,"data":' + data_json + b"}\r\n"


def encode_error(error: GatewayError, ext_id: str | None) -> bytes:
    return orjson.dumps(error.to_wire(ext_id)) + TERMINATOR


def encode_event(event: str, event_type: int, data_json: bytes) -> bytes:
    """A pushed event frame around already-encoded `data`."""
    return (
        b'{"event":'
        + orjson.dumps(event)
        + b',"type":'
        + str(event_type).encode()
        + b',"data":'
        + data_json
        + b"}\r\n"
    )
