"""What the official ScaleTrade clients do to a frame before parsing it, as small functions.

- PHP, before parsing every frame: each `'` not preceded by a backslash becomes `"`, a `,` followed
  by optional whitespace and `}` or `]` is deleted, and tabs and newlines are stripped.
- Node.js: each TCP read is decoded as UTF-8 on its own and appended to the text buffer, and when a
  frame fails to parse, the same comma deletion is applied (here: always, which is stricter).

A frame the gateway writes must parse to the same value after either treatment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: PCRE's `\s` (the PHP client's regex has no `u` flag, so ASCII whitespace only).
_PHP_COMMA = re.compile(r",[\t\n\x0b\f\r ]*([}\]])")
#: JavaScript's `\s` includes Unicode spaces; Python's `\s` on a str is a superset of it.
_NODE_COMMA = re.compile(r",\s*([}\]])")
_PHP_QUOTE = re.compile(r"(?<!\\)'")


def strip_terminator(frame: bytes) -> bytes:
    assert frame.endswith(b"\r\n"), frame
    return frame[:-2]


def php_repair(frame: bytes) -> str:
    """The PHP client's text for one frame (its `\\r\\n` already split off by the reader)."""
    text = strip_terminator(frame).decode("utf-8", errors="replace")
    text = _PHP_QUOTE.sub('"', text)
    text = _PHP_COMMA.sub(r"\1", text)
    return text.replace("\t", "").replace("\n", "").replace("\r", "")


def node_repair(frame: bytes) -> str:
    """The Node client's text for one frame after its comma deletion."""
    return _NODE_COMMA.sub(r"\1", strip_terminator(frame).decode("utf-8", errors="replace"))


def node_decode(reads: Iterable[bytes]) -> str:
    """The Node client's buffer: every read decoded as UTF-8 on its own, then concatenated."""
    return "".join(chunk.decode("utf-8", errors="replace") for chunk in reads)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
