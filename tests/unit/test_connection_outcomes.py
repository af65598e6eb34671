"""What one connection answers, counts and logs on each of its paths, driven without sockets.

Each request shape (HealthCheck, a read, a deferred finance write, an AddUser task) can end in an
answer, a refusal, an unexpected error or a closed session. Each ending is answered exactly once,
counted once under its own command and status with its latency, and logged as the operator reads
it. Errors are planted by swapping a row of the command table for one test, as
tests/e2e/test_internal_errors.py does over TCP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from manager_gateway.commands.registry import COMMANDS
from manager_gateway.ledger.sqlite import SQLiteLedger
from manager_gateway.protocol.errors import SyncTimeout
from manager_gateway.runtime.storage import Batch
from manager_gateway.server import connection as connection_module
from manager_gateway.server.connection import Connection
from manager_gateway.server.metrics import STATUSES, CommandStats
from manager_gateway.session.access import SessionType
from manager_gateway.waiters import SessionGone
from tests.fakes import GatedLedger

from .test_connection import (
    FakeTransport,
    Rig,
    RigFactory,
    request,
    stalled_connection,
    turns,
)

LOGIN = 1001
PEER = "127.0.0.1:5555"  # FakeTransport's peername
WAIT_S = 30  # bound on work done off the loop (ledger, hashing); generous for mutmut's tracing
USER = {
    "group": "demo",
    "name": "T",
    "password": "secret123",
    "leverage": 100,
    "enable": 1,
    "email": "t@example.com",
}
INTERNAL = {"status": 500, "error": "INTERNAL_ERROR", "message": "internal error"}


@pytest.fixture(autouse=True)
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """Every event the connection module logs, debug ones included, whatever logging an earlier
    in-process CLI test configured (its level filter, its cached loggers). For every test: a
    captured event is not rendered, and rendering a planted bug's traceback with its locals
    takes seconds under mutmut's tracing."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        with structlog.testing.capture_logs() as captured:
            monkeypatch.setattr(
                connection_module, "log", structlog.get_logger("manager_gateway.connection")
            )
            yield captured
    finally:
        structlog.configure(**saved)


def answers(transport: FakeTransport) -> list[dict[str, Any]]:
    """The answers written, events left out."""
    return [frame for frame in transport.frames() if "event" not in frame]


def named(logs: list[MutableMapping[str, Any]], *events: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] in events]


async def add_account(rig: Rig, conn: Connection, transport: FakeTransport) -> None:
    """Account LOGIN in group demo, added over `conn`, which binds a manager token."""
    conn.data_received(request("AddUser", "add", rig.token(), **USER, login=LOGIN))
    added = await transport.wait_for("add")
    assert added["status"] == 200, added


class Counts:
    """Requests answered and latencies observed, per command label, since a snapshot."""

    def __init__(self, rig: Rig) -> None:
        self.metrics = rig.gateway.metrics
        self.before = self._take()

    def _labelled(self) -> dict[str, CommandStats]:
        return {**self.metrics.commands, "unknown": self.metrics.unknown}

    def _take(self) -> dict[str, tuple[list[int], int]]:
        return {
            label: (list(stats.answers), sum(stats.latency.counts))
            for label, stats in self._labelled().items()
        }

    def since(self) -> dict[tuple[str, int], int]:
        """(command, status) -> answers counted since the snapshot; latencies must match."""
        moved: dict[tuple[str, int], int] = {}
        for label, (answers, observed) in self._take().items():
            old_answers, old_observed = self.before[label]
            delta = {
                (label, status): new - old
                for status, new, old in zip(STATUSES, answers, old_answers, strict=True)
                if new != old
            }
            assert observed - old_observed == sum(delta.values()), f"latency of {label}"
            moved.update(delta)
        return moved


# -- each path: one answer, counted once under its command and status ------------------------


class PlantedBug(RuntimeError):
    """Stands for a bug in a handler: not a GatewayError."""


BUG = PlantedBug("planted")


def raising_read(ctx: Any, data: Any) -> Any:
    raise BUG


def raising_deferred(ctx: Any, data: Any) -> asyncio.Future[Any]:
    raise BUG


def failing_later(error: BaseException) -> Callable[[Any, Any], asyncio.Future[Any]]:
    """A deferred handler whose future fails with `error` on a later turn, then its write is
    decided (the main loop's order: the answer first)."""

    def handler(ctx: Any, data: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def fail() -> None:
            future.set_exception(error)
            ctx.decided()

        asyncio.get_running_loop().call_soon(fail)
        return future

    return handler


def raising_coroutine(error: BaseException) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handler(ctx: Any, data: Any) -> Any:
        raise error

    return handler


# (command, data, planted handler or None, the answer without extID or None for no answer)
PATHS: dict[str, tuple[str, dict[str, Any], Any, dict[str, Any] | None]] = {
    "health-check": ("HealthCheck", {}, None, {"status": 200}),
    "read": ("GetAccountByLogin", {"login": LOGIN}, None, {"status": 200}),
    "read-refused": (
        "GetAccountByLogin",
        {"login": 999},
        None,
        {"status": 404, "error": "USER_NOT_FOUND", "message": "account 999 not found"},
    ),
    "read-bug": ("GetGroups", {}, raising_read, INTERNAL),
    "deferred": ("BalanceIn", {"login": LOGIN, "amount": 5}, None, {"status": 200}),
    "deferred-refused": (
        "BalanceOut",
        {"login": LOGIN, "amount": -5},
        None,
        {
            "status": 400,
            "error": "NOT_ENOUGH_MONEY",
            "message": "balance of 1001 would become -5.00",
        },
    ),
    "deferred-bug": ("BalanceIn", {"login": LOGIN, "amount": 5}, failing_later(BUG), INTERNAL),
    "deferred-at-once-bug": (
        "BalanceIn",
        {"login": LOGIN, "amount": 5},
        raising_deferred,
        INTERNAL,
    ),
    "deferred-session-gone": (
        "BalanceIn",
        {"login": LOGIN, "amount": 5},
        failing_later(SessionGone()),
        None,
    ),
    "task": ("AddUser", {**USER, "login": 1002}, None, {"status": 200}),
    "task-refused": (
        "AddUser",
        {**USER, "login": LOGIN},
        None,
        {"status": 409, "error": "USER_EXISTS", "message": "account 1001 exists"},
    ),
    "task-bug": ("AddUser", {**USER, "login": 1002}, raising_coroutine(BUG), INTERNAL),
    "task-session-gone": (
        "AddUser",
        {**USER, "login": 1002},
        raising_coroutine(SessionGone()),
        None,
    ),
}


@pytest.mark.parametrize("path", sorted(PATHS))
async def test_each_path_answers_once_and_counts_its_command_and_status(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Whichever way a request ends, it is answered exactly once under its extID and counted once
    under its own command and status, with its latency; a request whose session went away is
    neither answered nor counted. A read sent behind it is answered after it."""
    command, data, handler, expected = PATHS[path]
    rig = await make_rig()
    conn, transport = rig.connect()
    await add_account(rig, conn, transport)
    if handler is not None:
        spec = COMMANDS[command]
        monkeypatch.setitem(COMMANDS, command, dataclasses.replace(spec, handler=handler))
    counts = Counts(rig)
    transport.written.clear()

    behind = request("GetUserBalanceList", "after", logins=[LOGIN])
    conn.data_received(request(command, "it", **data) + behind)
    await transport.wait_for("after", WAIT_S)
    for _ in range(3):  # a failed answer would come on the turns right after the read's
        await turns()

    written = answers(transport)
    after = {("GetUserBalanceList", 200): 1}
    if expected is None:
        assert [frame for frame in written if frame["extID"] == "it"] == []
        assert counts.since() == after
    else:
        [answer] = [frame for frame in written if frame["extID"] == "it"]
        assert {k: v for k, v in answer.items() if k not in ("extID", "data")} == expected
        assert counts.since() == {(command, expected["status"]): 1, **after}
    assert written[-1]["extID"] == "after"
    assert not transport.closing


async def test_a_frame_without_a_usable_envelope_is_answered_and_counted_as_invalid(
    make_rig: RigFactory, logs: list[MutableMapping[str, Any]]
) -> None:
    """A frame that is not a JSON object, or has no usable extID or command, is answered 400
    under the extID it carried (null when none), counted under the label "invalid" with its
    latency, and logged at debug with the error."""
    rig = await make_rig()
    conn, transport = rig.connect()
    counts = Counts(rig)
    invalid = rig.gateway.metrics.invalid
    conn.data_received(b'{"command":\r\n' + b'{"extID":"x1","data":{}}\r\n')
    await turns()
    assert transport.frames() == [
        {
            "extID": None,
            "status": 400,
            "error": "INVALID_JSON",
            "message": "invalid JSON: unexpected end of data",
        },
        {
            "extID": "x1",
            "status": 400,
            "error": "INVALID_REQUEST",
            "message": "command must be a non-empty string",
        },
    ]
    assert invalid.answers[STATUSES.index(400)] == 2
    assert sum(invalid.answers) == 2
    assert sum(invalid.latency.counts) == 2
    assert counts.since() == {}
    assert named(logs, "request_rejected") == [
        {
            "event": "request_rejected",
            "log_level": "debug",
            "conn_id": conn.conn_id,
            "peer": PEER,
            "error": frame["error"],
            "message": frame["message"],
        }
        for frame in transport.frames()
    ]
    assert not transport.closing


async def test_the_hub_walks_a_connection_only_while_it_can_hear_events(
    make_rig: RigFactory,
) -> None:
    """A connection is among the hub's listeners only with a bound token and an event channel
    on: not before it binds one, and not once it unsubscribed from every channel."""
    rig = await make_rig()
    hub = rig.gateway.hub
    conn, transport = rig.connect()
    conn.data_received(request("HealthCheck", "anonymous"))
    await turns()
    assert hub.listeners == set()
    conn.data_received(request("GetGroups", "bind", rig.token()))
    await turns()
    assert hub.listeners == {conn}
    channels = ["trade:event", "balance:event"]
    conn.data_received(request("Unsubscribe", "off", chanels=channels))
    await turns()
    assert [frame["status"] for frame in transport.frames()] == [200, 200, 200]
    assert hub.listeners == set()
    conn.data_received(request("Subscribe", "on", chanels=channels[:1]))
    await turns()
    assert hub.listeners == {conn}


async def test_ledger_reads_run_as_tasks_that_count_as_pending_while_they_run(
    make_rig: RigFactory,
) -> None:
    """GetTradeByOrder may read the ledger, so it runs as a task: answered when done, counted
    towards max_inflight while it runs (a second one pipelined right behind it is 429), and
    nothing once answered: more of them than max_inflight, one after another, all answer."""
    rig = await make_rig(max_inflight=1)
    conn, transport = rig.connect()
    await add_account(rig, conn, transport)
    conn.data_received(request("BalanceIn", "dep", login=LOGIN, amount=5))
    order = (await transport.wait_for("dep", WAIT_S))["data"]["order"]
    counts = Counts(rig)
    read = [request("GetTradeByOrder", ext_id, order=order) for ext_id in ("t1", "t2")]
    conn.data_received(b"".join(read))
    first = await transport.wait_for("t1", WAIT_S)
    second = await transport.wait_for("t2", WAIT_S)
    assert (first["status"], first["data"]["order"]) == (200, order)
    assert (second["status"], second["error"]) == (429, "TOO_MANY_REQUESTS")
    for index in range(3):
        conn.data_received(request("GetTradeByOrder", f"s{index}", order=order))
        assert (await transport.wait_for(f"s{index}", WAIT_S))["status"] == 200
    conn.data_received(request("GetTradeByOrder", "missing", order=999))
    missing = await transport.wait_for("missing", WAIT_S)
    assert {k: missing[k] for k in ("status", "error", "message")} == {
        "status": 404,
        "error": "TRADE_NOT_FOUND",
        "message": "order 999 not found",
    }
    await turns()
    assert conn.tasks == set()
    assert counts.since() == {
        ("GetTradeByOrder", 200): 4,
        ("GetTradeByOrder", 429): 1,
        ("GetTradeByOrder", 404): 1,
    }


# -- what is logged --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["read", "deferred", "deferred-at-once", "task"])
async def test_an_unexpected_error_is_logged_with_its_traceback(
    make_rig: RigFactory,
    monkeypatch: pytest.MonkeyPatch,
    logs: list[MutableMapping[str, Any]],
    where: str,
) -> None:
    """A bug in a handler is logged as an error naming the request, with the exception itself
    for its traceback."""
    command, data, handler, _ = PATHS[f"{where}-bug"]
    rig = await make_rig()
    conn, transport = rig.connect()
    await add_account(rig, conn, transport)
    monkeypatch.setitem(COMMANDS, command, dataclasses.replace(COMMANDS[command], handler=handler))
    conn.data_received(request(command, "bug", **data))
    assert (await transport.wait_for("bug", WAIT_S))["status"] == 500
    assert named(logs, "request_failed") == [
        {
            "event": "request_failed",
            "log_level": "error",
            "conn_id": conn.conn_id,
            "peer": PEER,
            "ext_id": "bug",
            "command": command,
            "exc_info": BUG,
        }
    ]


async def test_a_refusal_is_logged_at_debug_with_what_was_refused(
    make_rig: RigFactory, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    """Each refusal is one debug line with the request, the session (subject/type, None before
    one is bound) and the error; a Sync timeout is its own event, carrying the error's data."""
    storage = GatedLedger(tmp_path / "gated", "FULL")
    rig = await make_rig(storage=storage)
    conn, transport = rig.connect()
    conn.data_received(request("GetGroups", "unbound"))
    await turns()
    await add_account(rig, conn, transport)
    conn.data_received(request("GetAccountByLogin", "missing", login=999))
    storage.commit_started.clear()
    storage.hold()
    conn.data_received(request("BalanceInSync", "sync", login=LOGIN, amount=1))
    assert await asyncio.to_thread(storage.commit_started.wait, WAIT_S)
    assert rig.gateway.waiters.bound_count() == 1  # its order reserved before the commit
    rig.clock.advance(rig.gateway.settings.sync_timeout_ms / 1000)
    timed_out = await transport.wait_for("sync")
    assert timed_out["error"] == SyncTimeout.code
    assert timed_out["data"]["order"] > 0
    storage.release()

    manager = f"1/{int(SessionType.MANAGER)}"
    context: dict[str, Any] = {"log_level": "debug", "conn_id": conn.conn_id, "peer": PEER}
    assert named(logs, "command_rejected", "sync_timeout") == [
        {
            "event": "command_rejected",
            **context,
            "ext_id": "unbound",
            "command": "GetGroups",
            "session": None,
            "status": 401,
            "error": "INVALID_TOKEN",
            "message": "missing token",
            "data": None,
        },
        {
            "event": "command_rejected",
            **context,
            "ext_id": "missing",
            "command": "GetAccountByLogin",
            "session": manager,
            "status": 404,
            "error": "USER_NOT_FOUND",
            "message": "account 999 not found",
            "data": None,
        },
        {
            "event": "sync_timeout",
            **context,
            "ext_id": "sync",
            "command": "BalanceInSync",
            "session": manager,
            "status": 504,
            "error": "SYNC_TIMEOUT",
            "message": "no matching trade event before timeout",
            "data": timed_out["data"],
        },
    ]


def closing(logs: list[MutableMapping[str, Any]], conn: Connection) -> list[str]:
    """The reasons `conn` was logged closing for, in order."""
    return [
        entry["reason"]
        for entry in named(logs, "connection_closing")
        if entry.get("conn_id") == conn.conn_id
    ]


async def test_each_close_is_logged_once_with_its_reason(
    make_rig: RigFactory, logs: list[MutableMapping[str, Any]]
) -> None:
    """Each connection is logged opening under its own id and peer. The auth timeout, the frame
    timeout, an oversized frame and too many invalid tokens each close it with one info line
    naming the reason, then one line once it is gone (with the transport's error, if any). A
    timer that fires after the close (before the transport reports it lost) logs nothing."""
    rig = await make_rig(max_frame_bytes=1024)
    silent, silent_transport = rig.connect()
    rig.clock.advance(rig.gateway.settings.auth_timeout_s)
    partial, _ = rig.connect()
    partial.data_received(request("SubscribeAll", "auth", rig.token()) + b'{"command":')
    rig.clock.advance(rig.gateway.settings.frame_timeout_s)
    oversized, _ = rig.connect()
    oversized.data_received(b"x" * 1500)
    guesser, guesser_transport = rig.connect()
    guesser.data_received(b"".join(request("GetGroups", f"b{i}", "bad") for i in range(10)))
    assert guesser_transport.closing
    rig.clock.advance(rig.gateway.settings.auth_timeout_s)  # the guesser's auth timer, too late
    await turns()
    reset, _ = rig.connect()
    reset.connection_lost(ConnectionResetError("reset by peer"))
    conns = [silent, partial, oversized, guesser, reset]

    assert [type(conn.conn_id) for conn in conns] == [int] * 5
    assert len({conn.conn_id for conn in conns}) == 5
    assert named(logs, "connection_opened") == [
        {"event": "connection_opened", "log_level": "info", "conn_id": conn.conn_id, "peer": PEER}
        for conn in conns
    ]
    assert closing(logs, silent) == ["auth_timeout"]
    assert closing(logs, partial) == ["frame_timeout"]
    assert closing(logs, oversized) == ["frame_too_large"]
    assert closing(logs, guesser) == ["too_many_auth_failures"]
    assert closing(logs, reset) == []
    assert silent_transport.lost and guesser_transport.lost
    assert rig.gateway.connections == set()
    assert named(logs, "connection_closed") == [
        {
            "event": "connection_closed",
            "log_level": "info",
            "conn_id": conn.conn_id,
            "peer": PEER,
            "error": "reset by peer" if conn is reset else None,
        }
        for conn in conns
    ]
    assert named(logs, "auth_penalty") == [
        {
            "event": "auth_penalty",
            "log_level": "warning",
            "conn_id": guesser.conn_id,
            "peer": PEER,
            "address": "127.0.0.1",
            "penalty_s": rig.gateway.settings.auth_penalty_s,
        }
    ]


async def test_refused_connections_are_counted_and_logged_with_their_reason(
    make_rig: RigFactory, logs: list[MutableMapping[str, Any]]
) -> None:
    """Every connection is counted as admitted or refused; each refusal is aborted with one
    warning naming its reason: max_connections while the gateway is full, draining once the
    shutdown has begun."""
    rig = await make_rig(max_connections=2)
    admitted = [rig.connect() for _ in range(2)]
    full = [rig.connect() for _ in range(2)]
    await rig.gateway.shutdown()
    late = rig.connect()
    await turns()
    metrics = rig.gateway.metrics
    assert (metrics.connections_accepted, metrics.connections_refused) == (2, 3)
    assert [transport.aborted for _, transport in admitted + full + [late]] == [False] * 2 + [
        True
    ] * 3
    assert [(entry["conn_id"], entry["reason"]) for entry in named(logs, "connection_refused")] == [
        (full[0][0].conn_id, "max_connections"),
        (full[1][0].conn_id, "max_connections"),
        (late[0].conn_id, "draining"),
    ]


class PeerlessTransport(FakeTransport):
    """A transport whose peer address is unknown (the peer was gone before the accept)."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_a_connection_with_no_peer_address_is_served_and_logged_as_unknown(
    make_rig: RigFactory, logs: list[MutableMapping[str, Any]]
) -> None:
    """Without a peer address a connection is still served; its log lines and its auth penalty
    name the peer "?"."""
    rig = await make_rig(max_auth_failures=1)
    conn = Connection(rig.gateway)
    transport = PeerlessTransport(conn)
    rig.transports.append(transport)
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(request("HealthCheck", "hc") + request("GetGroups", "bad", "bad"))
    await turns()
    assert [frame["status"] for frame in transport.frames()] == [200, 401]
    assert named(logs, "connection_opened", "auth_penalty") == [
        {"event": "connection_opened", "log_level": "info", "conn_id": conn.conn_id, "peer": "?"},
        {
            "event": "auth_penalty",
            "log_level": "warning",
            "conn_id": conn.conn_id,
            "peer": "?",
            "address": "?",
            "penalty_s": rig.gateway.settings.auth_penalty_s,
        },
    ]


# -- closing -----------------------------------------------------------------------------------


async def test_requests_behind_the_one_that_closed_the_connection_are_not_run(
    make_rig: RigFactory,
) -> None:
    """Frames read in the same chunk as the tenth invalid token, after it, go with the
    connection: a deposit among them moves nothing, though it carries a valid token."""
    rig = await make_rig()
    other, other_transport = rig.connect()
    await add_account(rig, other, other_transport)
    conn, transport = rig.connect()
    conn.data_received(
        b"".join(request("GetGroups", f"b{i}", "bad") for i in range(10))
        + request("BalanceIn", "behind", rig.token(), login=LOGIN, amount=5)
    )
    assert transport.closing
    other.data_received(request("BalanceIn", "other", login=LOGIN, amount=1))
    assert (await other_transport.wait_for("other", WAIT_S))["status"] == 200
    account = rig.gateway.runtime.account(LOGIN)
    assert account is not None
    assert account.balance == 1
    assert [frame["extID"] for frame in answers(transport)] == [f"b{i}" for i in range(10)]


async def test_the_address_closed_for_invalid_tokens_is_refused_for_its_penalty(
    make_rig: RigFactory, logs: list[MutableMapping[str, Any]]
) -> None:
    """Once a connection is closed for max_auth_failures, a new one from its address is refused,
    counted and logged until auth_penalty_s has passed, and what it had sent is never run (a
    deposit with a valid token moves nothing); then the address is admitted again."""
    rig = await make_rig(auth_penalty_s=2.0)
    other, other_transport = rig.connect()
    await add_account(rig, other, other_transport)
    conn, transport = rig.connect()
    conn.data_received(b"".join(request("GetGroups", f"b{i}", "bad") for i in range(10)))
    assert transport.closing
    await turns()
    late, late_transport = rig.connect()
    assert late_transport.aborted
    late.data_received(request("BalanceIn", "late", rig.token(), login=LOGIN, amount=5))
    await turns()
    assert late_transport.lost
    assert late not in rig.gateway.connections
    assert rig.gateway.metrics.connections_refused == 1
    assert [entry for entry in logs if entry.get("conn_id") == late.conn_id] == [
        {
            "event": "connection_refused",
            "log_level": "warning",
            "conn_id": late.conn_id,
            "peer": PEER,
            "reason": "auth_penalty",
        },
        {
            "event": "connection_closed",
            "log_level": "info",
            "conn_id": late.conn_id,
            "peer": PEER,
            "error": None,
        },
    ]
    other.data_received(request("BalanceIn", "other", login=LOGIN, amount=1))
    assert (await other_transport.wait_for("other", WAIT_S))["status"] == 200
    account = rig.gateway.runtime.account(LOGIN)
    assert account is not None
    assert account.balance == 1

    rig.clock.advance(2.0)
    again, again_transport = rig.connect()
    assert not again_transport.closing
    assert again in rig.gateway.connections
    assert rig.gateway.metrics.connections_refused == 1


async def test_a_frame_completed_with_the_next_one_begun_restarts_the_deadline(
    make_rig: RigFactory,
) -> None:
    """A chunk that completes a partial frame and begins another restarts the frame timeout from
    that chunk: the timer armed for the first partial frame finds the new one younger and waits
    out the rest of its frame_timeout_s, to the millisecond; the close then leaves nothing."""
    rig = await make_rig()
    conn, transport = rig.connect()
    conn.data_received(request("SubscribeAll", "auth", rig.token()))
    first = request("HealthCheck", "first")
    conn.data_received(first[:10])  # t=0: a partial frame, its timer due at t=30
    rig.clock.advance(0.5)
    conn.data_received(first[10:] + b'{"command":')  # t=0.5: complete, and a new partial one
    rig.clock.advance(29.5)  # t=30: the timer fires; the new partial frame is 29.5 s old
    assert not transport.closing
    rig.clock.advance(0.499)
    assert not transport.closing
    rig.clock.advance(0.001)  # t=30.5
    assert transport.closing
    await turns()
    assert [frame["extID"] for frame in transport.frames()] == ["auth", "first"]
    assert transport.lost
    assert rig.gateway.connections == set()
    assert rig.clock.pending_timers() == 0


# -- read-your-writes, one commit at a time ------------------------------------------------------


class SteppedLedger(SQLiteLedger):
    """The real SQLite ledger; while `stepping`, each commit waits for an `allow()` of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stepping = False
        self.waiting = threading.Semaphore(0)  # released by each commit as it starts waiting
        self._permits = threading.Semaphore(0)

    def commit(self, batch: Batch) -> None:
        if self.stepping:
            self.waiting.release()
            self._permits.acquire()
        super().commit(batch)

    def allow(self) -> None:
        self._permits.release()

    def release(self) -> None:
        """Let every commit through from now on (the rig's teardown calls it)."""
        self.stepping = False
        self._permits.release(1000)


async def test_a_held_read_waits_for_the_writes_before_it_only(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    """Reads held behind their connection's writes are answered as soon as every write received
    before them is decided: the first write's commit releases the read between the two writes,
    from a state with the first write only, while the read after the second write waits for the
    second commit."""
    storage = SteppedLedger(tmp_path / "stepped", "FULL")
    rig = await make_rig(storage=storage)
    conn, transport = rig.connect()
    await add_account(rig, conn, transport)
    storage.stepping = True
    conn.data_received(request("BalanceIn", "w1", login=LOGIN, amount=1))
    assert await asyncio.to_thread(storage.waiting.acquire, True, WAIT_S)  # w1 in its commit
    conn.data_received(
        request("GetAccountByLogin", "r1", login=LOGIN)
        + request("BalanceIn", "w2", login=LOGIN, amount=10)
        + request("GetAccountByLogin", "r2", login=LOGIN)
    )
    storage.allow()  # w1's commit only: w2 is in the next batch
    r1 = await transport.wait_for("r1", WAIT_S)
    assert r1["data"]["balance"] == 1.0
    assert await asyncio.to_thread(storage.waiting.acquire, True, WAIT_S)  # w2 in its commit
    await turns()
    assert [frame["extID"] for frame in answers(transport)] == ["add", "w1", "r1"]
    storage.allow()
    r2 = await transport.wait_for("r2", WAIT_S)
    assert r2["data"]["balance"] == 11.0
    assert [frame["extID"] for frame in answers(transport)] == ["add", "w1", "r1", "w2", "r2"]


# -- output ------------------------------------------------------------------------------------


class RecordingTransport(FakeTransport):
    """Records what is written even once it is closing (a real one would drop it and warn)."""

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        self.wrote.set()


async def test_nothing_queued_is_written_once_the_transport_is_closing(
    make_rig: RigFactory,
) -> None:
    """An answer queued in the turn the peer went away is dropped, not written to the closing
    transport."""
    rig = await make_rig()
    conn = Connection(rig.gateway)
    transport = RecordingTransport(conn)
    rig.transports.append(transport)
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(request("HealthCheck", "hc"))
    transport.close()  # the peer is gone before the loop gets to write the answer
    await turns()
    assert transport.lost
    assert transport.written == []


async def test_after_a_big_answer_the_limit_allows_max_outbound_bytes_more_exactly(
    make_rig: RigFactory,
) -> None:
    """A peer that stopped reading after a big answer may have max_outbound_bytes more queued
    behind it, to the byte, before it is closed; one byte more closes it."""
    limit = 64 * 1024
    rig = await make_rig(max_outbound_bytes=limit)
    conn, transport = stalled_connection(rig)
    big = b"x" * (200 * 1024) + b"\r\n"
    conn.send(big)
    await turns(1)
    event = b"e" * 1022 + b"\r\n"  # 1 KiB
    for _ in range(limit // len(event)):
        conn.send(event)
        await turns(1)
    assert transport.buffered == len(big) + limit
    assert not transport.closing and rig.gateway.slow_consumer_disconnects == 0
    conn.send(b"\n")
    await turns(1)
    assert transport.aborted and rig.gateway.slow_consumer_disconnects == 1


async def test_slow_consumers_are_counted_and_logged(
    make_rig: RigFactory, logs: list[MutableMapping[str, Any]]
) -> None:
    """Each connection closed for not reading is counted and logged once as a warning with how
    much was buffered; a timer firing before the transport reports it lost logs nothing more."""
    rig = await make_rig(max_outbound_bytes=64 * 1024)
    stalled = [stalled_connection(rig) for _ in range(2)]
    for conn, _ in stalled:
        conn.send(b"x" * (64 * 1024) + b"\r\n")
    await turns(1)
    for conn, _ in stalled:
        conn.send(b"y" * (64 * 1024 - 2) + b"\r\n")  # exactly the limit beyond the first
    await turns(1)
    assert [transport.aborted for _, transport in stalled] == [False, False]
    for conn, _ in stalled:
        conn.send(b"\n")
    await turns(1)
    assert [transport.aborted for _, transport in stalled] == [True, True]
    assert rig.gateway.slow_consumer_disconnects == 2
    rig.clock.advance(rig.gateway.settings.auth_timeout_s)  # before connection_lost comes
    await turns()
    assert named(logs, "slow_consumer_closed", "connection_closing") == [
        {
            "event": "slow_consumer_closed",
            "log_level": "warning",
            "conn_id": conn.conn_id,
            "peer": PEER,
            "buffered": transport.buffered,
        }
        for conn, transport in stalled
    ]
    assert [transport.buffered for _, transport in stalled] == [2 * 64 * 1024 + 2 + 1] * 2
