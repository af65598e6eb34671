"""FrameDecoder: bytes in, frames out (docs/protocol.md section 1), with no I/O involved."""

from __future__ import annotations

import pytest

from manager_gateway.protocol.errors import FrameTooLarge
from manager_gateway.protocol.framing import DEFAULT_MAX_FRAME_BYTES, FrameDecoder

FRAMES = [
    b'{"command":"HealthCheck","extID":"a"}',
    b'{"extID":"b","data":{"s":"x\\r\\ny"}}',
    b"[1,2,3]",
    b"{}",
    '{"name":"\u00e9\u20ac"}'.encode(),
]
# CRLF and bare LF terminators mixed, with blank lines of both kinds in between.
STREAM = (
    FRAMES[0]
    + b"\r\n"
    + FRAMES[1]
    + b"\n"
    + b"\r\n\n"
    + FRAMES[2]
    + b"\r\n"
    + b"\r\n\r\n"
    + FRAMES[3]
    + b"\n"
    + b"\n"
    + FRAMES[4]
    + b"\r\n"
)
LIMIT = 64


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return frames


def test_whole_stream_in_one_feed() -> None:
    """The reference stream fed at once yields exactly its frames, in order."""
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == FRAMES
    assert not decoder.has_partial


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_split_at_every_byte_boundary(cut: int) -> None:
    """Cutting the stream in two at any byte offset yields the same frames."""
    decoder = FrameDecoder()
    assert feed_all(decoder, [STREAM[:cut], STREAM[cut:]]) == FRAMES
    assert not decoder.has_partial


def test_split_at_every_pair_of_boundaries() -> None:
    """Cutting the stream in three at any two byte offsets yields the same frames."""
    for first in range(len(STREAM) + 1):
        for second in range(first, len(STREAM) + 1):
            decoder = FrameDecoder()
            chunks = [STREAM[:first], STREAM[first:second], STREAM[second:]]
            assert feed_all(decoder, chunks) == FRAMES, (first, second)
            assert not decoder.has_partial


def test_byte_by_byte() -> None:
    """Feeding one byte at a time yields the same frames."""
    decoder = FrameDecoder()
    assert feed_all(decoder, [STREAM[i : i + 1] for i in range(len(STREAM))]) == FRAMES
    assert not decoder.has_partial


def test_empty_feed_yields_nothing() -> None:
    """Feeding no bytes returns no frames and leaves no partial."""
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert not decoder.has_partial


@pytest.mark.parametrize("terminator", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_terminators_are_stripped(terminator: bytes) -> None:
    """Both CRLF and a bare LF end a frame, and neither is part of the frame."""
    decoder = FrameDecoder()
    assert decoder.feed(b'{"a":1}' + terminator + b'{"b":2}' + terminator) == [
        b'{"a":1}',
        b'{"b":2}',
    ]


def test_blank_lines_are_skipped() -> None:
    """Lines holding only a terminator produce no frames."""
    decoder = FrameDecoder()
    assert decoder.feed(b"\r\n\n\r\n\n\n\r\n") == []
    assert not decoder.has_partial


def test_cr_and_lf_in_separate_chunks() -> None:
    """A `\\r` ending one chunk and the `\\n` starting the next form one CRLF terminator."""
    decoder = FrameDecoder()
    assert decoder.feed(b'{"a":1}\r') == []
    assert decoder.has_partial
    assert decoder.feed(b'\n{"b":2}\r') == [b'{"a":1}']
    assert decoder.feed(b"\n") == [b'{"b":2}']
    assert not decoder.has_partial


def test_cr_alone_in_a_chunk() -> None:
    """A chunk holding only the `\\r` of the terminator is joined correctly."""
    decoder = FrameDecoder()
    assert feed_all(decoder, [b"{}", b"\r", b"\n", b"\r", b"\n"]) == [b"{}"]
    assert not decoder.has_partial


def test_cr_not_before_lf_stays_in_frame() -> None:
    """Only a `\\r` directly before `\\n` is part of the terminator."""
    decoder = FrameDecoder()
    assert decoder.feed(b"ab\rc\r\n") == [b"ab\rc"]


def test_frames_are_immutable_bytes() -> None:
    """Frames are `bytes`, not views into the decoder's buffer."""
    decoder = FrameDecoder()
    frames = decoder.feed(b"{}\r\n[]\n")
    assert [type(frame) for frame in frames] == [bytes, bytes]


def test_has_partial_follows_the_buffer() -> None:
    """`has_partial` is true exactly while an unfinished frame is buffered."""
    decoder = FrameDecoder()
    assert decoder.has_partial is False
    assert decoder.feed(b'{"a"') == []
    assert decoder.has_partial is True
    assert decoder.feed(b":1}\r\n") == [b'{"a":1}']
    assert decoder.has_partial is False
    assert decoder.feed(b'{}\r\n{"b') == [b"{}"]
    assert decoder.has_partial is True
    assert decoder.feed(b'":2}\n') == [b'{"b":2}']
    assert decoder.has_partial is False


def test_tens_of_thousands_of_frames_in_one_feed() -> None:
    """50,000 frames in one chunk come out complete and in order."""
    frames = [b'{"command":"HealthCheck","extID":"r%d"}' % i for i in range(50_000)]
    stream = b"".join(frame + (b"\r\n" if i % 2 else b"\n") for i, frame in enumerate(frames))
    decoder = FrameDecoder()
    assert decoder.feed(stream) == frames
    assert not decoder.has_partial


def test_limit_is_per_frame_not_per_chunk() -> None:
    """A chunk far larger than the limit is fine when each frame in it is within the limit."""
    frame = b"x" * LIMIT
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed((frame + b"\r\n") * 1000) == [frame] * 1000


@pytest.mark.parametrize("terminator", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_frame_exactly_at_limit_is_accepted(terminator: bytes) -> None:
    """A frame of exactly `max_frame_bytes` (terminator excluded) is accepted."""
    frame = b"x" * LIMIT
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed(frame + terminator) == [frame]
    assert not decoder.has_partial


@pytest.mark.parametrize("terminator", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_finished_frame_one_byte_over_limit_raises(terminator: bytes) -> None:
    """A complete frame of `max_frame_bytes + 1` raises FrameTooLarge."""
    decoder = FrameDecoder(LIMIT)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"x" * (LIMIT + 1) + terminator)


def test_frame_over_limit_after_good_frames_raises() -> None:
    """An oversized frame raises even when good frames precede it in the same chunk."""
    decoder = FrameDecoder(LIMIT)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"{}\r\n" + b"x" * (LIMIT + 1) + b"\r\n")


def test_frame_at_limit_fed_byte_by_byte_is_accepted() -> None:
    """A frame of exactly the limit, fed one byte at a time with its CRLF, is accepted."""
    frame = b"y" * LIMIT
    decoder = FrameDecoder(LIMIT)
    stream = frame + b"\r\n"
    assert feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))]) == [frame]


def test_partial_at_limit_is_kept() -> None:
    """An unfinished frame of exactly the limit is buffered, not refused."""
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed(b"x" * LIMIT) == []
    assert decoder.has_partial
    assert decoder.feed(b"\r\n") == [b"x" * LIMIT]


def test_partial_at_limit_plus_cr_is_kept() -> None:
    """A frame at the limit followed by the `\\r` half of its terminator is not refused."""
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed(b"x" * LIMIT + b"\r") == []
    assert decoder.feed(b"\n") == [b"x" * LIMIT]


def test_partial_at_limit_plus_cr_then_more_data_raises() -> None:
    """A `\\r` at the limit that turns out not to start a terminator makes the frame too large."""
    decoder = FrameDecoder(LIMIT)
    decoder.feed(b"x" * LIMIT + b"\r")
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"x")


def test_unfinished_partial_one_byte_over_limit_raises() -> None:
    """An unfinished frame of `max_frame_bytes + 1` non-terminator bytes raises at once."""
    decoder = FrameDecoder(LIMIT)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"x" * (LIMIT + 1))


def test_unfinished_partial_growing_past_limit_raises_on_first_byte_over() -> None:
    """A partial growing byte by byte raises on the first byte past the limit, no newline needed."""
    decoder = FrameDecoder(LIMIT)
    for _ in range(LIMIT):
        assert decoder.feed(b"x") == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"x")


def test_unfinished_partial_far_over_limit_raises() -> None:
    """A large unfinished frame raises without waiting for a newline."""
    decoder = FrameDecoder(LIMIT)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"{}\n" + b"x" * (10 * LIMIT))


def test_default_limit_is_one_mebibyte() -> None:
    """The default decoder accepts a 1 MiB frame and refuses 1 MiB + 1 byte."""
    assert DEFAULT_MAX_FRAME_BYTES == 1024 * 1024
    frame = b"z" * DEFAULT_MAX_FRAME_BYTES
    assert FrameDecoder().feed(frame + b"\r\n") == [frame]
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(frame + b"z\r\n")


def test_frame_too_large_carries_413() -> None:
    """The raised error answers 413 FRAME_TOO_LARGE."""
    decoder = FrameDecoder(LIMIT)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"x" * (LIMIT + 1) + b"\n")
    assert (info.value.status, info.value.code) == (413, "FRAME_TOO_LARGE")


def test_lines_of_only_spaces_and_tabs_are_blank() -> None:
    """A line of spaces and tabs is skipped like an empty one; leading spaces stay in a frame."""
    decoder = FrameDecoder(64)
    assert decoder.feed(b"  \t \r\n\t\n {}\r\n") == [b" {}"]


def test_frames_before_an_oversized_one_are_carried_on_the_error() -> None:
    """Frames completed in the same feed before the oversized one travel on the exception."""
    decoder = FrameDecoder(16)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b'{"a":1}\r\n{"b":2}\n' + b"x" * 17 + b"\r\n")
    assert caught.value.completed == [b'{"a":1}', b'{"b":2}']


def test_frames_before_an_unfinished_oversized_one_are_carried_on_the_error() -> None:
    """An oversized frame still unfinished at the end of the read does not lose the frames the
    same read completed: they are served as when its terminator arrives in the same read."""
    decoder = FrameDecoder(16)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b'{"a":1}\r\n' + b"x" * 17)
    assert caught.value.completed == [b'{"a":1}']
