"""Sans-IO line framing: feed bytes, get complete frames.

A frame is one JSON value terminated by `\\r\\n`; a bare `\\n` is accepted too, and blank lines
(empty, or only spaces and tabs) are skipped. The decoder owns the partial-frame buffer and
enforces the size limit, so a peer can never make us buffer more than `max_frame_bytes` of an
unfinished frame.
"""

from __future__ import annotations

from .errors import FrameTooLarge

#: Default limit on one frame, terminator excluded. Big enough for a 50,000-row filter request,
#: small enough that 10,000 connections with a half-sent frame each cannot exhaust memory.
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
#: Bytes that may start a blank line (one of only spaces and tabs, which is skipped).
_BLANK = frozenset(b" \t\r")


class FrameDecoder:
    """Splits a byte stream into frames (without their line terminator)."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    @property
    def has_partial(self) -> bool:
        """True while an unfinished frame is buffered (the frame timeout runs then)."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames completed by them, in order.

        Raises `FrameTooLarge` when a frame (finished or not) exceeds the limit; the decoder is
        then unusable, as the connection is closed.
        """
        buffer = self._buffer
        start = len(buffer)
        buffer += data
        frames: list[bytes] = []
        pos = 0
        # Only the new bytes can hold a terminator we have not seen yet.
        search_from = start
        while True:
            nl = buffer.find(b"\n", search_from)
            if nl < 0:
                break
            end = nl - 1 if nl > pos and buffer[nl - 1] == 0x0D else nl
            if end - pos > self._max:
                raise FrameTooLarge(completed=frames)
            if end > pos and not (buffer[pos] in _BLANK and buffer[pos:end].isspace()):
                frames.append(bytes(buffer[pos:end]))
            pos = search_from = nl + 1
        if pos:
            del buffer[:pos]
        # One byte over is allowed only when it is a '\r' that may be half of the terminator.
        excess = len(buffer) - self._max
        if excess > 1 or (excess == 1 and buffer[-1] != 0x0D):
            raise FrameTooLarge(completed=frames)
        return frames
