"""Envelopes: parse a request frame, encode responses and pushed events.

The envelope is parsed with orjson before anything else so that the `extID` can be echoed even when
the rest of the request is wrong. Encoders return complete frames, `\\r\\n` included; a record is
encoded once and its bytes spliced into every frame that carries it.

Every frame written is 7-bit ASCII that the official clients parse intact. Their readers are not
JSON-safe: the Node.js client decodes each TCP read as UTF-8 on its own (a character split between
two reads becomes U+FFFD), and the PHP client, before parsing every frame, turns each `'` not
preceded by a backslash into `"`, deletes a `,` followed by optional whitespace and `}` or `]`, and
strips tabs and newlines (the Node client does the same comma deletion when a frame fails to
parse). So inside strings a non-ASCII character is written `\\uXXXX` (a surrogate pair beyond the
BMP), `'` is `\\u0027`, and a `,` followed by optional whitespace and `}` or `]` is `\\u002c`. Tabs
and newlines inside strings are already `\\t` and `\\n` in JSON, so stripping raw ones is harmless.

The rule is applied by `_wire_safe` to each finished frame, in every encoder below; nothing else
writes frames, so answers, events and error messages that echo input all comply, whoever built
their data (a Sync answer, a retry answered from its key, an event's record bytes from the main
loop). Checking the frame rather than the record bytes where they are made costs one check more
per Sync answer, and keeps the rule in one place; an event is still encoded once for all its
listeners. A frame that needs nothing (nearly all) costs a few C-level scans; one that needs
escaping is rewritten, which changes no value and no byte outside its strings.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
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


# -- the ASCII-safe rule ---------------------------------------------------------------------------
#
# What `_wire_safe` relies on, for a frame made of orjson output and ASCII glue:
# - orjson writes compact JSON: no whitespace outside strings, and no trailing comma (no valid
#   JSON has one), so a structural `,` is always followed by `"` or the first byte of a value.
# - Inside strings orjson escapes every control character (`\t`, `\n`, `\r`, `\u000b`, `\f`), so
#   the only raw whitespace byte in a frame is a space inside a string.
# - Structural bytes are ASCII and never `'`.
# So a non-ASCII byte, a `'`, and a `,` followed by optional whitespace and `}` or `]` (which
# shows as `,}`, `,]` or `, ` + spaces + `}`/`]`) can only be inside a string, and the `}` or `]`
# is then inside the same string (a string ends with `"`). Rewriting them as `\uXXXX` escapes
# changes no value.

_JSON_ESCAPE = "manager_gateway.json_escape"


def _json_escape_run(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: a run of non-ASCII characters as JSON `\\uXXXX` escapes."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    # The run holds only non-ASCII characters (never `"` or `\`), so the stdlib's C escaper
    # returns exactly their `\uXXXX` escapes (a surrogate pair beyond the BMP) between the
    # quotes it adds.
    return encode_basestring_ascii(error.object[error.start : error.end])[1:-1], error.end


codecs.register_error(_JSON_ESCAPE, _json_escape_run)

#: A `,` followed by spaces then `}` or `]`; `,}` and `,]` are handled by `bytes.replace`.
_SPACED_COMMA = re.compile(rb", +[]}]")


def _escape_spaced_comma(match: re.Match[bytes]) -> bytes:
    return b"\\u002c" + match[0][1:]


def _escape(frame: bytes) -> bytes:
    """The slow path of `_wire_safe`: rewrite what the clients would damage (all of it inside
    strings, see above); a frame that needs nothing comes back equal."""
    if not frame.isascii():
        frame = frame.decode().encode("ascii", _JSON_ESCAPE)
    # Each `replace` returns the frame itself when there is nothing to replace.
    frame = frame.replace(b"'", b"\\u0027")
    frame = frame.replace(b",}", b"\\u002c}").replace(b",]", b"\\u002c]")
    # After the non-ASCII step, so this sees the bytes the clients see (a no-break space between
    # `,` and `}` is `\u00a0` by then, which no client's repair touches).
    return _SPACED_COMMA.sub(_escape_spaced_comma, frame)


_QUOTE = ord("'")
_CLOSE_BRACKET = ord("]")
#: A `,` followed by a space, `}` or `]`: a superset of what `_escape` rewrites.
_COMMA_SUSPECT = re.compile(rb",[ \]}]").search
#: What follows a frame's first `}` when all its `}` are in the run of closers at its end.
_CLOSING_TAILS = frozenset({b"\r\n", b"}\r\n", b"}}\r\n", b"}}}\r\n"})


def _wire_safe(frame: bytes) -> bytes:
    """`frame` with the ASCII-safe rule applied: itself, unless something needs escaping.

    The test is exact, or errs only towards `_escape`, which then changes nothing. `isascii`
    and `in` with an int (memchr) are the only scans CPython does at memory speed; a search for a
    two-byte sequence is a byte loop, which costs about as much as orjson's encoding of the same
    frame. So a frame with no `]` (records, balances, acks, errors) skips it: a `,` to escape
    needs a `}` or `]` inside a string, and there is no such `}` when the frame's first `}` is
    followed only by closers (a `}` inside a string would be followed by the string's `"`).
    Frames with a list (filter pages, balance lists) pay for the search.
    """
    if frame.isascii() and _QUOTE not in frame:
        if _CLOSE_BRACKET not in frame and frame.partition(b"}")[2] in _CLOSING_TAILS:
            return frame
        if _COMMA_SUSPECT(frame) is None:
            return frame
    return _escape(frame)


# -- encoders -------------------------------------------------------------------------------------


def encode(obj: Any) -> bytes:
    """One frame holding `obj`."""
    return _wire_safe(orjson.dumps(obj) + TERMINATOR)


def encode_ok(ext_id: str, data: Any) -> bytes:
    return _wire_safe(orjson.dumps({"extID": ext_id, "status": 200, "data": data}) + TERMINATOR)


def encode_ok_raw(ext_id: str, data_json: bytes) -> bytes:
    """A success frame around already-encoded `data` (a Sync answer reuses the event's bytes)."""
    return _wire_safe(
        b'{"extID":' + orjson.dumps(ext_id) + b',"status":200,"data":' + data_json + b"}\r\n"
    )


def encode_error(error: GatewayError, ext_id: str | None) -> bytes:
    return _wire_safe(orjson.dumps(error.to_wire(ext_id)) + TERMINATOR)


def encode_event(event: str, event_type: int, data_json: bytes) -> bytes:
    """A pushed event frame around already-encoded `data`."""
    return _wire_safe(
        b'{"event":'
        + orjson.dumps(event)
        + b',"type":'
        + str(event_type).encode()
        + b',"data":'
        + data_json
        + b"}\r\n"
    )
