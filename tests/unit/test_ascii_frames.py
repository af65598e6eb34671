"""Every frame the codec writes is 7-bit ASCII that the official clients parse intact (issue 12).

The PHP client rewrites `'` and deletes `,` before `}`/`]` in every frame; the Node client decodes
each read as UTF-8 on its own. So non-ASCII characters, `'` and such commas must be `\\uXXXX`
escapes, and escaping must change nothing else: not a value, not a byte outside a string.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from manager_gateway.protocol.codec import (
    TERMINATOR,
    encode,
    encode_error,
    encode_event,
    encode_ok,
    encode_ok_raw,
)
from manager_gateway.protocol.errors import GroupNotFound, InvalidRequest
from manager_gateway.protocol.money import to_wire

from ..official_clients import node_decode, node_repair, php_repair

#: Pieces that matter to the clients' repairs, glued together by `TRICKY_TEXT`.
PIECES = [
    "'",
    "\\'",
    ",",
    " ",
    "  ",
    "}",
    "]",
    "{",
    "[",
    "\t",
    "\n",
    "\r",
    "\\",
    '"',
    "\x00",
    "\x7f",
    "\u00a0",
    "\u2028",
    "\ufeff",
    "é",
    "奖金",
    "🎉",
]
TRICKY_TEXT = st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=12).map("".join)
TEXT = st.text() | TRICKY_TEXT
#: Amounts as the gateway emits them: exact decimals at the currency's digits, as floats.
MONEY = st.decimals(min_value=-(10**9), max_value=10**9, places=2).map(to_wire)
NUMBERS = (
    MONEY | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63 - 1)
)

#: A JSON string literal in orjson's output.
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
#: What the clients would damage in orjson's output (whose only raw whitespace is a space).
NEEDS_ESCAPE = re.compile(rb"[\x80-\xff']|, *[}\]]")

EXAMPLE = 'Ann\'s 奖金 🎉 ", }" ",]"'

FUZZ = settings(
    derandomize=True,  # the same examples on every run: CI is reproducible
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def record(comment: str, profit: float) -> dict[str, Any]:
    """A finance record's wire form."""
    return {
        "order": 1234567,
        "login": 1001,
        "cmd": 7,
        "state": 3,
        "symbol": "",
        "volume": 0,
        "profit": profit,
        "comment": comment,
        "open_time": 1718000000,
        "close_time": 1718000000,
        "update_time": 1718000000,
        "reason": 7,
    }


def frames(
    comment: str, name: str, email: str, ext_id: str, amount: float, number: float
) -> list[tuple[bytes, Any]]:
    """Each codec function's frame for values carrying the strings, with the value it encodes."""
    trade = record(comment, amount)
    trade_json = orjson.dumps(trade)
    profile = {"login": 1001, "group": name, "name": name, "email": email, "balance": amount}
    page = {"rows": [trade, record(name, number)], "count": 2}
    nested = {"a": {"b": {"c": {"d": [comment, number, {"e": email}]}}}, "f": ext_id}
    not_found = GroupNotFound(f"group {name!r} not found")  # repr quotes, as the gateway's do
    with_data = InvalidRequest(comment, data={"extID": ext_id, "rows": [email]})
    return [
        (encode_ok(ext_id, profile), {"extID": ext_id, "status": 200, "data": profile}),
        (encode_ok_raw(ext_id, trade_json), {"extID": ext_id, "status": 200, "data": trade}),
        (
            encode_event("trade:event", 1, trade_json),
            {"event": "trade:event", "type": 1, "data": trade},
        ),
        (encode_error(not_found, ext_id), not_found.to_wire(ext_id)),
        (encode_error(with_data, None), with_data.to_wire(None)),
        (encode_ok(ext_id, page), {"extID": ext_id, "status": 200, "data": page}),
        (encode(nested), nested),
    ]


def strings_blanked(frame: bytes) -> bytes:
    return JSON_STRING.sub(b'""', frame)


@FUZZ
@given(TEXT, TEXT, TEXT, st.text(min_size=1, max_size=128), MONEY, NUMBERS)
@example(EXAMPLE, "王小明 'Ann'", "王@例え.jp", "ext 'é' , }", 300.0, 1e16)
@example("\U0001f389", "中文", "a@b", "🎉", 0.01, -0.0)
@example("'", ", }", ",]", ",\t]", 1e9, 1e-7)
@example("\\", '"', "\\'", "\\\\'", -1e9, 123456789.12)
@example(",  ]", ",\u00a0}", ",\n}", ",,}", 0.0, -(2**63))
def test_every_frame_is_ascii_and_parses_in_both_clients(
    comment: str, name: str, email: str, ext_id: str, amount: float, number: float
) -> None:
    """Every frame is ASCII, no raw control byte, and parses as sent and after both repairs."""
    for frame, value in frames(comment, name, email, ext_id, amount, number):
        assert frame.isascii(), frame
        # Tabs and newlines inside strings are `\t` and `\n`: stripping raw ones removes nothing.
        assert frame.endswith(TERMINATOR) and min(frame[:-2]) >= 0x20, frame
        assert orjson.loads(frame) == value
        assert orjson.loads(php_repair(frame)) == value
        assert orjson.loads(node_repair(frame)) == value


@FUZZ
@given(TEXT, TEXT, TEXT, st.text(min_size=1, max_size=128), MONEY, NUMBERS)
@example(EXAMPLE, "Zoë", "ann's@例え.jp", "ext-1", 300.0, 1e16)
@example("plain, text", "no [escape] needed", "a@b", "x", 1.5, 2**63 - 1)
def test_escaping_touches_only_strings_and_only_when_needed(
    comment: str, name: str, email: str, ext_id: str, amount: float, number: float
) -> None:
    """Outside strings a frame is orjson's byte for byte; one needing no escape is orjson's."""
    for frame, value in frames(comment, name, email, ext_id, amount, number):
        plain = orjson.dumps(value) + TERMINATOR
        assert strings_blanked(frame) == strings_blanked(plain)
        assert (frame == plain) == (NEEDS_ESCAPE.search(plain) is None)


@FUZZ
@given(TEXT, st.text(min_size=1, max_size=128))
@example(EXAMPLE, "é")
@example("🎉" * 40, "奖金")
def test_a_node_client_reading_in_any_two_pieces_gets_the_frame(comment: str, ext_id: str) -> None:
    """Cut at any byte, each piece decoded as UTF-8 on its own, the text is the frame's."""
    frame = encode_ok_raw(ext_id, orjson.dumps(record(comment, 300.0)))
    text = frame.decode()
    for cut in range(len(frame) + 1):
        assert node_decode([frame[:cut], frame[cut:]]) == text


def test_the_wire_form_of_a_comment_that_needs_everything() -> None:
    """`'`, non-ASCII (a surrogate pair beyond the BMP) and `,` before `}` or `]` are escaped."""
    frame = encode_event("trade:event", 0, orjson.dumps({"comment": EXAMPLE, "profit": 300.0}))
    assert frame == (
        b'{"event":"trade:event","type":0,"data":{"comment":"Ann\\u0027s \\u5956\\u91d1 '
        b'\\ud83c\\udf89 \\"\\u002c }\\" \\"\\u002c]\\"","profit":300.0}}\r\n'
    )


def test_money_keeps_orjsons_number_form() -> None:
    """Amounts from exact decimals are written as orjson writes them, escaped frame or not."""
    amounts = [to_wire(Decimal(text)) for text in ("300", "0.01", "-1000000000", "123456789.12")]
    for comment in ("plain", EXAMPLE):
        frame = encode_ok("x", {"amounts": amounts, "comment": comment})
        assert b'"amounts":[300.0,0.01,-1000000000.0,123456789.12]' in frame


@pytest.mark.parametrize(
    "request_bytes",
    [b'"\\ud800"', b'"\\udc00"', b'"a\\ud83c"', b'"\xed\xa0\x80"', b'"\xed\xb0\x80"'],
)
def test_lone_surrogates_never_reach_an_encoder(request_bytes: bytes) -> None:
    """orjson refuses a lone surrogate in a request, so no string from a client holds one."""
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(request_bytes)


def test_an_encoder_refuses_a_lone_surrogate_rather_than_writing_it() -> None:
    """A server-made string with a lone surrogate raises instead of reaching the wire."""
    with pytest.raises(orjson.JSONEncodeError):
        encode_ok("x", {"comment": "\ud800"})
