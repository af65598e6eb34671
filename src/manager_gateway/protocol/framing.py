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
        if b"\n" not in data:  # the middle of a frame: just keep it
            buffer += data
            self._check_partial([])
            return []
        if buffer:
            buffer += data
            data = bytes(buffer)
        *lines, rest = data.split(b"\n")
        frames: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self._max:
                raise FrameTooLarge(completed=frames)
            if line and not (line[0] in _BLANK and line.isspace()):
                frames.append(line)
        self._buffer = bytearray(rest)
        # The frames this read completed travel on the error too: whether they are served must
        # not depend on whether TCP delivered the oversized tail in the same read.
        self._check_partial(frames)
        return frames

    def _check_partial(self, completed: list[bytes]) -> None:
        # One byte over is allowed only when it is a '\r' that may be half of the terminator.
        buffer = self._buffer
        excess = len(buffer) - self._max
        if excess > 1 or (excess == 1 and buffer[-1] != 0x0D):
            raise FrameTooLarge(completed=completed)
