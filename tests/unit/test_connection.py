"""One connection driven without sockets: a fake transport, a fake clock, a real gateway behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from manager_gateway.server.app import Gateway
from manager_gateway.server.connection import Connection
from manager_gateway.session.access import SessionType
from tests.fakes import FakeClock, GatedLedger

TOKEN_TTL_S = 24 * 3600


async def turns(n: int = 5) -> None:
    """Let the loop run `n` turns (request tasks, then the call_soon flush); no real time passes."""
    for _ in range(n):
        await asyncio.sleep(0)


class FakeTransport:
    """Records writes; close/abort report connection_lost on the next loop turn, as asyncio does."""

    def __init__(self, protocol: Connection) -> None:
        self.protocol = protocol
        self.written: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.lost = False
        self.wrote = asyncio.Event()

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.written.append(bytes(data))
        self.wrote.set()

    def _lose(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self._connection_lost)

    def _connection_lost(self) -> None:
        self.lost = True
        self.protocol.connection_lost(None)

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def frames(self) -> list[dict[str, Any]]:
        data = b"".join(self.written)
        assert data == b"" or data.endswith(b"\r\n"), data
        return [orjson.loads(line) for line in data.split(b"\r\n") if line]

    async def wait_for(self, ext_id: str, timeout: float = 10) -> dict[str, Any]:
        """The answer to `ext_id`, waiting for work done off the loop (ledger, hashing)."""

        async def poll() -> dict[str, Any]:
            while True:
                for frame in self.frames():
                    if frame.get("extID") == ext_id:
                        return frame
                self.wrote.clear()
                await self.wrote.wait()

        return await asyncio.wait_for(poll(), timeout)


class Rig:
    """A gateway with a fake clock and helpers to open fake connections on it."""

    def __init__(self, gateway: Gateway, clock: FakeClock) -> None:
        self.gateway = gateway
        self.clock = clock
        self.transports: list[FakeTransport] = []

    def connect(self) -> tuple[Connection, FakeTransport]:
        conn = Connection(self.gateway)
        transport = FakeTransport(conn)
        self.transports.append(transport)
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    def token(self, session_type: SessionType = SessionType.MANAGER, login: str = "1") -> str:
        return self.gateway.tokens.issue(
            login, session_type, ["*"], int(self.clock.wall()) + TOKEN_TTL_S
        )


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    """A gateway with default settings."""
    return await make_rig()


def request(command: str, ext_id: str, token: str | None = None, **data: Any) -> bytes:
    body: dict[str, Any] = {"command": command, "extID": ext_id, "data": data}
    if token is not None:
        body["__token"] = token
    return orjson.dumps(body) + b"\r\n"


async def authenticate(rig: Rig, conn: Connection, transport: FakeTransport) -> None:
    conn.data_received(request("SubscribeAll", "auth", rig.token()))
    await turns()
    assert transport.frames()[-1]["status"] == 200
    assert conn.session.ever_authenticated


# -- HealthCheck and auth ------------------------------------------------------------------


async def test_health_check_without_token(rig: Rig) -> None:
    """HealthCheck is answered 200 without a token, with the clock's time in ms."""
    conn, transport = rig.connect()
    conn.data_received(request("HealthCheck", "hc-1"))
    await turns()
    assert transport.frames() == [
        {"extID": "hc-1", "status": 200, "data": {"status": "ok", "time": 1_800_000_000_000}}
    ]
    assert not conn.session.ever_authenticated
    assert not transport.closing


async def test_request_without_token_is_401(rig: Rig) -> None:
    """Any other command without a token is 401 INVALID_TOKEN; the connection stays open."""
    conn, transport = rig.connect()
    conn.data_received(request("GetGroups", "g-1"))
    await turns()
    [frame] = transport.frames()
    assert (frame["extID"], frame["status"], frame["error"]) == ("g-1", 401, "INVALID_TOKEN")
    assert not transport.closing


async def test_auth_timeout_closes_unauthenticated(rig: Rig) -> None:
    """A connection that presented no valid token is closed when auth_timeout_s passes."""
    conn, transport = rig.connect()
    conn.data_received(request("HealthCheck", "hc"))  # traffic, but no token
    conn.data_received(request("GetGroups", "bad", "not-a-token"))
    await turns()
    rig.clock.advance(9.999)
    assert not transport.closing
    rig.clock.advance(0.001)
    assert transport.closing
    assert not transport.aborted
    await turns()
    assert transport.lost
    assert rig.gateway.connections == set()
    assert rig.clock.pending_timers() == 0


async def test_auth_timeout_spares_authenticated(rig: Rig) -> None:
    """A connection that authenticated in time is not closed by the auth timeout, nor later."""
    conn, transport = rig.connect()
    rig.clock.advance(9)
    await authenticate(rig, conn, transport)
    rig.clock.advance(3600)
    await turns()
    assert not transport.closing
    assert conn in rig.gateway.connections
    conn.data_received(request("GetGroups", "g-2"))  # the bound token still serves
    await turns()
    assert transport.frames()[-1]["status"] == 200


async def test_health_check_with_valid_token_binds(rig: Rig) -> None:
    """A HealthCheck carrying a valid token binds the connection: it survives auth_timeout_s,
    is counted as a session of its type, and later requests need no token."""
    conn, transport = rig.connect()
    conn.data_received(request("HealthCheck", "hc", rig.token(SessionType.DEALER)))
    await turns()
    assert transport.frames()[-1]["status"] == 200
    assert conn.session.access is not None
    assert conn.session.access.type is SessionType.DEALER
    assert rig.gateway.metrics.sessions_by_type[SessionType.DEALER] == 1
    rig.clock.advance(3600)  # far past auth_timeout_s
    await turns()
    assert not transport.closing
    conn.data_received(request("GetGroups", "g"))  # no token: the bound one serves
    await turns()
    answer = transport.frames()[-1]
    assert (answer["extID"], answer["status"], answer["data"]["count"]) == ("g", 200, 1)


async def test_health_check_with_invalid_token_changes_nothing(rig: Rig) -> None:
    """An invalid token on HealthCheck is answered 200 and ignored: it binds nothing (the auth
    timeout still closes), unbinds nothing and is not an authentication failure."""
    bound, bound_transport = rig.connect()
    await authenticate(rig, bound, bound_transport)
    access = bound.session.access
    expired = rig.gateway.tokens.issue("1", SessionType.MANAGER, ["*"], int(rig.clock.wall()) - 1)
    for index, token in enumerate(["not-a-token", expired, "x" * 300]):
        bound.data_received(request("HealthCheck", f"hb{index}", token))
    await turns()
    assert [frame["status"] for frame in bound_transport.frames()[1:]] == [200, 200, 200]
    assert bound.session.access is access
    assert bound.session.auth_failures == 0
    bound.data_received(request("GetGroups", "still-bound"))
    await turns()
    assert bound_transport.frames()[-1]["status"] == 200

    conn, transport = rig.connect()
    bad = b"".join(request("HealthCheck", f"h{i}", "bad") for i in range(15))
    conn.data_received(bad)  # more than max_auth_failures (10): none of them counts
    await turns()
    assert [frame["status"] for frame in transport.frames()] == [200] * 15
    assert conn.session.auth_failures == 0
    assert not conn.session.ever_authenticated
    assert not transport.closing
    rig.clock.advance(10)  # auth_timeout_s: still unauthenticated, so closed
    assert transport.closing


async def test_health_check_with_a_valid_token_resets_the_failure_count(rig: Rig) -> None:
    """A HealthCheck with a valid token is an accepted request: it resets the count of invalid
    tokens, whether the token is new or the one already bound; an invalid one does not."""
    conn, transport = rig.connect()
    token = rig.token()
    for first in ("h-new", "h-bound"):
        conn.data_received(b"".join(request("GetGroups", f"{first}-b{i}", "bad") for i in range(9)))
        conn.data_received(request("HealthCheck", f"{first}-bad", "bad"))
        await turns()
        assert conn.session.auth_failures == 9
        conn.data_received(request("HealthCheck", first, token))
        await turns()
        assert conn.session.auth_failures == 0
        assert not transport.closing


async def test_health_check_with_the_bound_token_at_its_expiry_changes_nothing(rig: Rig) -> None:
    """At the very second the bound token expires it is invalid: a HealthCheck with it leaves the
    count of invalid tokens as it is."""
    conn, _transport = rig.connect()
    token = rig.token()
    conn.data_received(request("GetGroups", "bind", token))
    conn.data_received(b"".join(request("GetGroups", f"b{i}", "bad") for i in range(9)))
    await turns()
    assert conn.session.access is not None
    assert conn.session.auth_failures == 9
    rig.clock.advance(conn.session.access.expires_at - rig.clock.wall())
    conn.data_received(request("HealthCheck", "at-expiry", token))
    await turns()
    assert conn.session.auth_failures == 9


async def test_auth_timeout_honours_setting(make_rig: RigFactory) -> None:
    """auth_timeout_s from the settings is the deadline."""
    rig = await make_rig(auth_timeout_s=2.5)
    _, transport = rig.connect()
    rig.clock.advance(2.4)
    assert not transport.closing
    rig.clock.advance(0.1)
    assert transport.closing


async def test_auth_failures_close_connection(rig: Rig) -> None:
    """max_auth_failures (10) consecutive invalid tokens: ten 401s, then the connection closes."""
    conn, transport = rig.connect()
    conn.data_received(b"".join(request("GetGroups", f"b{i}", "bad") for i in range(9)))
    await turns()
    assert not transport.closing
    assert conn.session.auth_failures == 9
    conn.data_received(request("GetGroups", "b9", "bad"))
    await turns()
    assert transport.closing
    frames = transport.frames()
    assert [f["extID"] for f in frames] == [f"b{i}" for i in range(10)]
    assert {(f["status"], f["error"]) for f in frames} == {(401, "INVALID_TOKEN")}
    conn.data_received(request("HealthCheck", "after"))  # ignored once closing
    await turns()
    assert len(transport.frames()) == 10


async def test_auth_failures_limit_from_settings(make_rig: RigFactory) -> None:
    """With max_auth_failures=3 the third invalid token closes the connection."""
    rig = await make_rig(max_auth_failures=3)
    conn, transport = rig.connect()
    conn.data_received(request("GetGroups", "b0", "bad") + request("GetGroups", "b1", "bad"))
    await turns()
    assert not transport.closing
    conn.data_received(request("GetGroups", "b2", "bad"))
    await turns()
    assert transport.closing
    assert len(transport.frames()) == 3


async def test_auth_failures_reset_by_success(rig: Rig) -> None:
    """A valid token between failures resets the count: 9 bad, 1 good, 9 bad keeps it open."""
    conn, transport = rig.connect()
    conn.data_received(b"".join(request("GetGroups", f"a{i}", "bad") for i in range(9)))
    await turns()
    await authenticate(rig, conn, transport)
    assert conn.session.auth_failures == 0
    conn.data_received(b"".join(request("GetGroups", f"c{i}", "bad") for i in range(9)))
    await turns()
    assert conn.session.auth_failures == 9
    assert not transport.closing
    assert len(transport.frames()) == 19


async def test_bad_token_on_bound_connection_is_401(rig: Rig) -> None:
    """An invalid presented token is 401 on a bound connection; the bound token keeps working."""
    conn, transport = rig.connect()
    await authenticate(rig, conn, transport)
    conn.data_received(request("GetGroups", "bad", "garbage") + request("GetGroups", "ok"))
    await turns()
    bad, ok = transport.frames()[-2:]
    assert (bad["extID"], bad["status"]) == ("bad", 401)
    assert (ok["extID"], ok["status"]) == ("ok", 200)


# -- frames --------------------------------------------------------------------------------


async def test_partial_frame_times_out(rig: Rig) -> None:
    """A partial frame that never ends closes the connection after frame_timeout_s (30 s)."""
    conn, transport = rig.connect()
    await authenticate(rig, conn, transport)
    conn.data_received(b'{"command":"HealthCheck",')
    rig.clock.advance(29.999)
    assert not transport.closing
    rig.clock.advance(0.001)
    assert transport.closing
    await turns()
    assert transport.lost
    assert rig.clock.pending_timers() == 0


async def test_partial_frame_trickle_still_times_out(rig: Rig) -> None:
    """Dribbling more bytes of the same frame does not extend its deadline."""
    conn, transport = rig.connect()
    await authenticate(rig, conn, transport)
    conn.data_received(b'{"command":')
    for _ in range(29):
        rig.clock.advance(1)
        conn.data_received(b" ")
    assert not transport.closing
    rig.clock.advance(1)
    assert transport.closing


async def test_partial_frame_completed_in_time(rig: Rig) -> None:
    """A partial frame completed before frame_timeout_s is answered and nothing closes."""
    conn, transport = rig.connect()
    await authenticate(rig, conn, transport)
    conn.data_received(b'{"command":"HealthCheck",')
    rig.clock.advance(29.9)
    conn.data_received(b'"extID":"late"}\r\n')
    await turns()
    rig.clock.advance(300)
    await turns()
    assert not transport.closing
    assert transport.frames()[-1]["extID"] == "late"


async def test_complete_frames_never_trip_timeout(rig: Rig) -> None:
    """A steady stream of complete frames for an hour never trips the frame timeout."""
    conn, transport = rig.connect()
    await authenticate(rig, conn, transport)
    for i in range(360):
        conn.data_received(request("HealthCheck", f"h{i}"))
        rig.clock.advance(10)
    await turns()
    assert not transport.closing
    assert len(transport.frames()) == 361


async def test_split_frames_never_trip_timeout(rig: Rig) -> None:
    """Frames arriving in two chunks 4 s apart, one every 7 s, never trip the frame timeout."""
    conn, transport = rig.connect()
    await authenticate(rig, conn, transport)
    for i in range(60):
        frame = request("HealthCheck", f"h{i}")
        conn.data_received(frame[:10])
        rig.clock.advance(4)
        assert not transport.closing, f"closed after {i} frames at t={rig.clock.now}"
        conn.data_received(frame[10:])
        rig.clock.advance(3)
    await turns()
    assert not transport.closing
    assert len(transport.frames()) == 61


async def test_new_partial_frame_gets_full_timeout(rig: Rig) -> None:
    """A partial frame started after an earlier one completed has its own frame_timeout_s."""
    conn, transport = rig.connect()
    await authenticate(rig, conn, transport)
    first = request("HealthCheck", "first")
    conn.data_received(first[:10])  # t=0: partial
    rig.clock.advance(10)
    conn.data_received(first[10:])  # t=10: complete, nothing buffered
    rig.clock.advance(15)
    conn.data_received(b'{"command":')  # t=25: a new partial frame begins
    rig.clock.advance(29)  # t=54: it is 29 s old
    assert not transport.closing, "a 5 s old partial frame was closed at t=30"
    rig.clock.advance(1)  # t=55: 30 s old
    assert transport.closing


async def test_frame_too_large(make_rig: RigFactory) -> None:
    """A frame over max_frame_bytes gets one 413 FRAME_TOO_LARGE with extID null, then close."""
    rig = await make_rig(max_frame_bytes=1024)
    conn, transport = rig.connect()
    conn.data_received(b"x" * 1500)
    assert transport.closing
    [frame] = transport.frames()
    assert frame["extID"] is None
    assert (frame["status"], frame["error"]) == (413, "FRAME_TOO_LARGE")
    conn.data_received(request("HealthCheck", "after"))
    await turns()
    assert transport.lost
    assert len(transport.frames()) == 1
    assert rig.clock.pending_timers() == 0


async def test_frame_too_large_complete_line(make_rig: RigFactory) -> None:
    """A complete but oversized line also gets exactly one 413 with extID null, then close."""
    rig = await make_rig(max_frame_bytes=1024)
    conn, transport = rig.connect()
    conn.data_received(request("HealthCheck", "big", pad="p" * 1100))
    await turns()
    assert transport.closing
    assert [(f["extID"], f["status"], f["error"]) for f in transport.frames()] == [
        (None, 413, "FRAME_TOO_LARGE")
    ]


async def test_frame_at_limit_is_accepted(make_rig: RigFactory) -> None:
    """A frame of exactly max_frame_bytes (terminator excluded) is processed normally."""
    rig = await make_rig(max_frame_bytes=1024)
    conn, transport = rig.connect()
    base = request("HealthCheck", "edge", pad="")
    frame = request("HealthCheck", "edge", pad="p" * (1024 - (len(base) - 2)))
    assert len(frame) == 1024 + 2
    conn.data_received(frame)
    await turns()
    assert not transport.closing
    assert transport.frames() == [
        {"extID": "edge", "status": 200, "data": {"status": "ok", "time": 1_800_000_000_000}}
    ]


# -- cleanup -------------------------------------------------------------------------------


async def test_connection_lost_cancels_timers(rig: Rig) -> None:
    """Closing cancels the auth and frame timers: no timer of the connection survives it."""
    conn, transport = rig.connect()
    conn.data_received(b'{"command":')
    assert rig.clock.pending_timers() == 2
    transport.close()
    await turns()
    assert transport.lost
    assert rig.clock.pending_timers() == 0
    assert rig.gateway.connections == set()
    assert rig.gateway.waiters.pending_count() == 0
    rig.clock.advance(3600)  # nothing fires on the dead connection
    assert transport.frames() == []


async def test_connection_lost_after_auth(rig: Rig) -> None:
    """An authenticated connection closed by the peer leaves no timer and no waiter."""
    conn, transport = rig.connect()
    await authenticate(rig, conn, transport)
    conn.connection_lost(None)
    assert rig.clock.pending_timers() == 0
    assert rig.gateway.waiters.pending_count() == 0
    assert conn not in rig.gateway.connections


async def test_connection_lost_drops_pending_sync(make_rig: RigFactory, tmp_path: Path) -> None:
    """A Sync request held by a stalled ledger is dropped with its timer when the peer leaves."""
    storage = GatedLedger(tmp_path / "gated", "FULL")
    rig = await make_rig(storage=storage)
    conn, transport = rig.connect()
    token = rig.token()
    user = {
        "group": "demo",
        "name": "T",
        "password": "secret123",
        "leverage": 100,
        "enable": 1,
        "email": "t@example.com",
        "login": 1001,
    }
    conn.data_received(request("AddUser", "add", token, **user))
    added = await transport.wait_for("add")
    assert added["status"] == 200, added
    storage.hold()
    conn.data_received(request("BalanceInSync", "sync", login=1001, amount=100.0))
    for _ in range(50):
        if rig.gateway.waiters.bound_count():
            break
        await asyncio.sleep(0)
    assert rig.gateway.waiters.pending_count() == 1
    assert rig.gateway.waiters.bound_count() == 1
    assert rig.clock.pending_timers() == 2  # the auth timer and the Sync waiter's timeout
    transport.close()
    await turns()
    assert transport.lost
    assert rig.gateway.waiters.pending_count() == 0
    assert rig.gateway.waiters.bound_count() == 0
    assert rig.clock.pending_timers() == 0
    assert conn.tasks == set()
    assert [f["extID"] for f in transport.frames()] == ["add"]
    storage.release()
    await rig.gateway.runtime.stop()  # the operation still completes, with no one to answer
    account = rig.gateway.runtime.account(1001)
    assert account is not None
    assert account.balance == Decimal("100.00")


# -- outbound back-pressure ---------------------------------------------------------------


class StalledPeerTransport(FakeTransport):
    """A peer that reads nothing until told to: every written byte stays buffered."""

    def __init__(self, protocol: Connection) -> None:
        super().__init__(protocol)
        self.buffered = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


def stalled_connection(rig: Rig) -> tuple[Connection, StalledPeerTransport]:
    conn = Connection(rig.gateway)
    transport = StalledPeerTransport(conn)
    rig.transports.append(transport)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_one_answer_bigger_than_the_limit_is_not_a_slow_consumer(
    make_rig: RigFactory,
) -> None:
    """A single frame larger than max_outbound_bytes (a big filter page) is written and the
    connection kept: the limit is for peers that stop reading, not for big answers."""
    rig = await make_rig(max_outbound_bytes=64 * 1024)
    conn, transport = stalled_connection(rig)
    conn.send(b"x" * (200 * 1024) + b"\r\n")
    await turns()
    assert transport.buffered > 3 * 64 * 1024
    assert not transport.closing and rig.gateway.slow_consumer_disconnects == 0


async def test_stalled_peer_is_closed_past_the_limit(make_rig: RigFactory) -> None:
    """Frames queued for a peer that reads nothing close it once what is buffered passes
    max_outbound_bytes beyond its largest frame; nothing more is written after that."""
    rig = await make_rig(max_outbound_bytes=64 * 1024)
    conn, transport = stalled_connection(rig)
    event = b"e" * 1000 + b"\r\n"
    sent = 0
    while not transport.closing:
        conn.send(event)
        await turns(1)
        sent += 1
        assert sent <= 70, "still open after well over max_outbound_bytes"
    assert transport.aborted and rig.gateway.slow_consumer_disconnects == 1
    assert 64 * 1024 < transport.buffered <= 64 * 1024 + 2 * len(event)


async def test_big_answer_then_stall_is_bounded(make_rig: RigFactory) -> None:
    """After a big answer the peer stops reading: events beyond the limit still close it, so
    memory stays within max_outbound_bytes plus that one answer."""
    rig = await make_rig(max_outbound_bytes=64 * 1024)
    conn, transport = stalled_connection(rig)
    big = b"x" * (200 * 1024) + b"\r\n"
    conn.send(big)
    await turns(1)
    while not transport.closing:
        conn.send(b"e" * 1000 + b"\r\n")
        await turns(1)
        assert transport.buffered <= len(big) + 64 * 1024 + 2000
    assert rig.gateway.slow_consumer_disconnects == 1


async def test_reading_peer_resets_the_allowance(make_rig: RigFactory) -> None:
    """Once the peer has read everything, the big answer no longer counts: a stall after that
    is held to max_outbound_bytes alone."""
    rig = await make_rig(max_outbound_bytes=64 * 1024)
    conn, transport = stalled_connection(rig)
    conn.send(b"x" * (200 * 1024) + b"\r\n")
    await turns(1)
    transport.buffered = 0  # the peer read it all
    while not transport.closing:
        conn.send(b"e" * 1000 + b"\r\n")
        await turns(1)
        assert transport.buffered <= 64 * 1024 + 2000
    assert rig.gateway.slow_consumer_disconnects == 1
