"""Pending Sync requests against a stalled main loop: every one must time out on time, none leak.

Set-up. One account (`login`) is created beforehand on a gateway process of its own
(`prepare_accounts`: AddUser hashes the password with scrypt, 16 MiB, which must not count as
the scenario's memory). The measured gateway loads it, serves metrics, and is started with
`sync_timeout_ms` and a `ledger_busy_timeout_ms` far above the scenario's length, so a commit
waits for as long as the ledger is locked instead of failing.

The stall. This process opens the ledger and holds SQLite's write lock (`BEGIN IMMEDIATE`),
then sends one valid "plug" `CreditInSync` for the account and a HealthCheck on the same
connection, and waits for the HealthCheck's answer. The gateway handles a connection's frames
in order, and its main loop takes the plug into a batch and starts that batch's commit (which
now waits for the lock) before the HealthCheck's answer is written: from then on the main loop
is stalled. The metrics are read at that point, with nothing slept: the main-loop queue should
be 0 and one waiter (the plug's) pending.

The burst. `requests` `CreditInSync` for logins that do not exist (`missing_login` + seq, valid
ints) go out over `connections` sessions (event channels off, at most `max_per_connection`
each, under max_inflight), as fast as the gateway reads them: HealthCheck probes between chunks
keep what is sent but unread small, so the gateway's timers, not a backlog this process made in
the socket buffers, are what is measured (`pending_peak` says how many were outstanding at
once). They queue behind the plug's batch, and each must be answered `504 SYNC_TIMEOUT` within
`sync_timeout_ms + slack_ms` of its send.

The release. The lock is released and the plug's batch commits (one record; its waiter timed
out long before, so nobody is answered). The main loop then refuses every queued operation with
USER_NOT_FOUND; their waiters are gone, so again nobody is answered, and the ledger does not
grow. A sentinel `CreditInSync` for the account, sent after the release, is answered only once
everything ahead of it is done; a 504 for it is retried under the same extID, which waits for
the same outcome (docs/protocol.md section 7). The ledger then holds two records: plug and sentinel.

Memory. The gateway's resident memory before the burst (once stalled), at its peak and after
the drain is reported for the record only: CPython's allocators keep part of what a burst
freed (arenas with a block still in use, malloc's heap), so RSS stays above its starting level
with nothing held. What shows a leak is `gateway_python_allocated_blocks`
(live allocations, from the gateway's metrics) at the same three points; after the drain it is
read `settle_scrapes` times, with HealthChecks between, and the lowest reading counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from .client import AnswerCallback, GatewayClient, encode_request
from .monitor import RssSampler, scrape_metrics
from .sessions import (
    ScenarioError,
    bind_sessions,
    close_clients,
    create_accounts,
    describe,
    mb,
    next_ext_id,
    open_clients,
    percentile,
)

BLOCKS = "gateway_python_allocated_blocks"
WAITERS = "gateway_sync_waiters"
QUEUED = "gateway_main_loop_queued_operations"
COMMIT_FAILURES = "gateway_ledger_commit_failures_total"
GAUGES = (
    WAITERS,
    QUEUED,
    BLOCKS,
    COMMIT_FAILURES,
    "gateway_connections_open",
    "process_resident_memory_bytes",
)
EXPECTED_RECORDS = 2  # the plug and the sentinel: the burst's operations are all refused
Scrape = Callable[[], Awaitable[dict[str, float] | None]]


@dataclass
class PendingSpec:
    requests: int = 100_000
    connections: int = 100
    max_per_connection: int = 1000  # under the gateway's max_inflight (1024)
    probe_every: int = 10  # requests per connection between HealthCheck probes (see send_all)
    probe_timeout_s: float = 30.0
    sync_timeout_ms: int = 5000  # the gateway's setting (it is started with it)
    # Also the gateway's: how long its stalled commit waits for the lock. It must outlast the
    # scenario, or the plug's batch fails while the lock is held and the queue behind it is
    # refused (404) before its timers fire.
    ledger_busy_timeout_ms: int = 600_000
    slack_ms: int = 100  # an answer later than timeout + slack after its send is late
    login: int = 700_000  # the one account: the plug and the sentinel credit it
    missing_login: int = 900_000_000  # the burst credits missing_login + seq: none exists
    accounts: int = 1  # not used: one account is enough (bench.py sets it on every phase)
    answer_grace_s: float = 10.0  # after the last send + timeout: how long to wait for answers
    drain_timeout_s: float = 120.0
    settle_scrapes: int = 3  # readings of the allocated blocks after the drain
    settle_probes: int = 100  # HealthChecks between them: allocations that run the young GC
    metrics_port: int | None = None
    create_accounts: bool = True  # False: `prepare_accounts` ran already (on another process)


class PendingRun:
    """The scenario's bookkeeping: per request its send, its answer and when it came."""

    def __init__(self, spec: PendingSpec) -> None:
        self.spec = spec
        self.sent_at = array("d", bytes(8 * spec.requests))
        self.answered = bytearray(spec.requests)
        self.received_at = array("d", bytes(8 * spec.requests))
        self.latency_ms = array("d")
        self.outcomes: Counter[str] = Counter()
        self.on_time = self.late = self.duplicates = 0
        self.sent = 0
        self.pending_peak = 0  # most requests sent and not yet answered, seen between chunks
        self.probe_failures = 0
        self.closing = False  # our own close fails what is left: that is "missing", not an answer
        self.limit_s = (spec.sync_timeout_ms + spec.slack_ms) / 1000
        self.ext_prefix = next_ext_id("pd-") + "-"  # + seq: the gateway's log names the request
        self.clock_offset = time.time() - time.perf_counter()  # perf_counter -> unix seconds
        self.all_answered = asyncio.get_running_loop().create_future()
        self.plug_sent = 0.0  # perf_counter; 0.0: no plug was sent
        self.plug_answer: str | None = None

    async def plug(self, client: GatewayClient) -> None:
        """Stall the main loop (the ledger must be locked already): a valid Sync credit, then a
        HealthCheck on the same connection, whose answer is written only after the main loop
        took the credit into a batch and started that batch's (blocked) commit."""
        data = {"login": self.spec.login, "amount": 1.0, "comment": "pending-plug"}
        self.plug_sent = time.perf_counter()
        client.send_cb("CreditInSync", data, f"{self.ext_prefix}plug", self._plug_answered)
        try:
            await client.request("HealthCheck", {}, timeout=self.spec.probe_timeout_s)
        except (TimeoutError, ConnectionError) as exc:
            raise ScenarioError(f"HealthCheck after the plug: {exc!r}") from exc

    def _plug_answered(self, _ext_id: str, reply: dict[str, Any] | ConnectionError) -> None:
        if not (self.closing and isinstance(reply, ConnectionError)):
            self.plug_answer = (
                "client/CONNECTION_LOST" if isinstance(reply, ConnectionError) else describe(reply)
            )

    def answer(self, seq: int, reply: dict[str, Any] | ConnectionError) -> None:
        now = time.perf_counter()
        if self.closing and isinstance(reply, ConnectionError):
            return
        if self.answered[seq]:
            self.duplicates += 1
            return
        self.answered[seq] = 1
        kind = "client/CONNECTION_LOST" if isinstance(reply, ConnectionError) else describe(reply)
        self.outcomes[kind] += 1
        self.received_at[seq] = now
        elapsed = now - self.sent_at[seq]
        self.latency_ms.append(elapsed * 1000)
        if kind == "504/SYNC_TIMEOUT":
            if elapsed <= self.limit_s:
                self.on_time += 1
            else:
                self.late += 1
        if self.outcomes.total() == self.spec.requests and not self.all_answered.done():
            self.all_answered.set_result(None)

    def _callback(self, seq: int) -> AnswerCallback:
        return lambda _ext_id, reply: self.answer(seq, reply)

    async def send_all(self, clients: list[GatewayClient]) -> None:
        """Each connection sends its share in chunks of `probe_every`, each chunk followed by a
        HealthCheck whose answer is awaited before the next: the gateway has read everything
        before a probe it answers, so what is sent but unread stays small and each send time
        is close to the moment the gateway starts the request's timeout."""
        await asyncio.gather(
            *(
                self._feed(client, range(i, self.spec.requests, len(clients)))
                for i, client in enumerate(clients)
            )
        )

    async def _feed(self, client: GatewayClient, seqs: range) -> None:
        spec = self.spec
        for first in range(0, len(seqs), spec.probe_every):
            for seq in seqs[first : first + spec.probe_every]:
                data = {
                    "login": spec.missing_login + seq,
                    "amount": 1.0,
                    "comment": f"pending-{seq}",
                }
                ext_id = f"{self.ext_prefix}{seq}"
                self.sent_at[seq] = time.perf_counter()
                self.sent += 1
                client.send_frame_cb(
                    encode_request("CreditInSync", data, ext_id), ext_id, self._callback(seq)
                )
            self.pending_peak = max(self.pending_peak, self.sent - self.outcomes.total())
            try:
                await client.request("HealthCheck", {}, timeout=spec.probe_timeout_s)
            except (TimeoutError, ConnectionError):
                self.probe_failures += 1
                if client.closed:
                    return


class LedgerLock:
    """Holds SQLite's write lock on the gateway's ledger from this process."""

    def __init__(self, path: Path) -> None:
        # Taken and released from worker threads (asyncio.to_thread), never at the same time.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self._db.execute("BEGIN IMMEDIATE")
        self.held_since = time.perf_counter()

    def release(self) -> float:
        """Roll back (nothing was written) and close; returns how long the lock was held."""
        self._db.execute("ROLLBACK")
        self._db.close()
        return time.perf_counter() - self.held_since


async def run_pending(
    host: str,
    port: int,
    token: str,
    ledger_path: Path,
    spec: PendingSpec,
    read_rss: Callable[[], int],
    gateway_log: Path | None = None,
) -> dict[str, Any]:
    """Run the scenario; with the gateway's log, also split the 504s' delay into the gateway's
    timer (send to the sweep that expired it) and the delivery (sweep to receipt)."""
    if spec.requests > spec.connections * spec.max_per_connection:
        raise ScenarioError("more requests than connections x max_per_connection allows")
    clients, failures = await open_clients(host, port, spec.connections)
    if failures:
        await close_clients(clients)
        raise ScenarioError(f"cannot open {spec.connections} connections: {dict(failures)}")
    run = PendingRun(spec)
    sampler = RssSampler(read_rss)
    try:
        await bind_sessions(clients, token, events=False)
        if spec.create_accounts:
            await create_accounts(clients[0], [spec.login], "pending")
        seen = await _stall_and_release(
            run,
            clients,
            ledger_path,
            sampler,
            read_rss,
            partial(scrape_metrics, host, spec.metrics_port, GAUGES),
        )
    finally:
        await sampler.stop()
        run.closing = True
        await close_clients(clients)
    logged = (
        None if gateway_log is None else await asyncio.to_thread(timeouts_in_log, gateway_log, run)
    )
    return {
        **_answers(run),
        "gateway_logged_timeouts": logged,
        "stall": _stall(seen["stalled"], run),
        "send_started_unix": seen["send_started_unix"],  # to line up with the gateway's log
        "send_s": seen["send_s"],
        "send_rate_per_s": round(run.sent / max(seen["send_s"], 1e-3), 1),
        "answered_after_s": seen["answered_s"],
        "lock_held_s": seen["held_s"],
        "drain": seen["drain"],
        "ledger_records_after": seen["records"],
        "ledger_records_expected": EXPECTED_RECORDS,
        "ledger_as_expected": seen["records"] == EXPECTED_RECORDS,
        "ledger_commit_failures": _value(seen["after"][-1], COMMIT_FAILURES),
        **_memory(seen, sampler),
    }


async def _stall_and_release(
    run: PendingRun,
    clients: list[GatewayClient],
    ledger_path: Path,
    sampler: RssSampler,
    read_rss: Callable[[], int],
    scrape: Scrape,
) -> dict[str, Any]:
    """Lock, plug, burst, wait for the answers, release, drain; the readings along the way."""
    spec = run.spec
    seen: dict[str, Any] = {}
    lock = await asyncio.to_thread(LedgerLock, ledger_path)
    try:
        await run.plug(clients[0])
        seen["stalled"] = await scrape()
        seen["rss_before"] = read_rss()
        sampler.start()
        started, seen["send_started_unix"] = time.perf_counter(), round(time.time(), 3)
        await run.send_all(clients)
        seen["send_s"] = round(time.perf_counter() - started, 3)
        seen["sent"] = await scrape()
        wait_s = spec.sync_timeout_ms / 1000 + spec.answer_grace_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(run.all_answered), wait_s)
        seen["answered_s"] = round(time.perf_counter() - started, 3)
        seen["answered"] = await scrape()
    finally:
        seen["held_s"] = round(await asyncio.to_thread(lock.release), 3)
    seen["drain"] = await _drain(clients[0], spec)
    seen["records"] = await asyncio.to_thread(_count_records, ledger_path)
    await sampler.stop()
    seen["rss_after"] = read_rss()
    seen["after"] = await _settled(clients[0], spec, scrape)
    return seen


def _stall(metrics: dict[str, float] | None, run: PendingRun) -> dict[str, Any]:
    """What the gateway said once stalled: nothing queued, one waiter (the plug's)."""
    queued = None if metrics is None else metrics.get(QUEUED)
    waiters = None if metrics is None else metrics.get(WAITERS)
    return {
        "queued_operations": queued,
        "sync_waiters": waiters,
        "as_expected": None if metrics is None else queued == 0 and waiters == 1,
        "plug_answer": run.plug_answer,
    }


async def _settled(
    client: GatewayClient, spec: PendingSpec, scrape: Scrape
) -> list[dict[str, float] | None]:
    """The metrics `settle_scrapes` times after the drain. What the burst left in reference
    cycles is freed only at the gateway's next garbage collection, which its own allocations
    trigger: HealthChecks between the readings are those allocations (nothing is slept)."""
    readings = [await scrape()]
    for _ in range(spec.settle_scrapes - 1):
        probes = (
            client.request("HealthCheck", {}, timeout=spec.probe_timeout_s)
            for _ in range(spec.settle_probes)
        )
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.gather(*probes)
        readings.append(await scrape())
    return readings


def _answers(run: PendingRun) -> dict[str, Any]:
    spec = run.spec
    return {
        "spec": asdict(spec),
        "sent": run.sent,
        "pending_peak": run.pending_peak,
        "probe_failures": run.probe_failures,
        "answers": dict(run.outcomes),
        "timed_out_on_time": run.on_time,
        "timed_out_late": run.late,
        "not_504": sum(n for kind, n in run.outcomes.items() if kind != "504/SYNC_TIMEOUT"),
        "missing": spec.requests - sum(run.answered),
        "duplicates": run.duplicates,
        "all_on_time": run.on_time == spec.requests,
        "answer_ms": _percentiles(sorted(run.latency_ms)),
        "limit_ms": spec.sync_timeout_ms + spec.slack_ms,
    }


def _memory(seen: dict[str, Any], sampler: RssSampler) -> dict[str, Any]:
    """RSS for the record; allocated blocks for the judgement (report.py): before the burst
    (once stalled), the most of the readings with the burst queued, the least after the drain."""
    stalled, after = seen["stalled"], seen["after"]
    during = [_value(seen[name], BLOCKS) for name in ("stalled", "sent", "answered")]
    after_readings = [_value(metrics, BLOCKS) for metrics in after]
    return {
        "rss_before_mb": mb(seen["rss_before"]),
        "rss_peak_mb": mb(sampler.peak),
        "rss_after_mb": mb(seen["rss_after"]),
        "rss_samples": [
            [t, mb(v)] for t, v in sampler.samples[:: max(1, len(sampler.samples) // 200)]
        ],
        "rss_note": "informational: CPython's allocators keep part of what a burst freed "
        "(arenas with a block still in use, malloc's heap), so RSS stays above "
        "its starting level with nothing held",
        "allocated_blocks_before": _value(stalled, BLOCKS),
        "allocated_blocks_peak": max((v for v in during if v is not None), default=None),
        "allocated_blocks_after": min((v for v in after_readings if v is not None), default=None),
        "allocated_blocks_after_readings": after_readings,
        "waiters_after": _value(after[-1], WAITERS),
        "gateway_metrics": {
            "stalled": stalled,
            "all_sent": seen["sent"],
            "all_answered": seen["answered"],
            "after": after[-1],
        },
    }


async def prepare_accounts(host: str, port: int, token: str, spec: PendingSpec) -> None:
    """Create the scenario's account. Run on a gateway of its own, the password hashing's
    memory is not counted in the scenario's "before" (AddUser hashes with scrypt, 16 MiB)."""
    clients, failures = await open_clients(host, port, 1)
    if failures:
        raise ScenarioError(f"cannot connect: {dict(failures)}")
    try:
        await bind_sessions(clients, token, events=False)
        await create_accounts(clients[0], [spec.login], "pending")
    finally:
        await close_clients(clients)


async def _drain(client: GatewayClient, spec: PendingSpec) -> dict[str, Any]:
    """A sentinel Sync, retried under one extID until 200: everything queued before it is done."""
    ext_id = next_ext_id("pd-sentinel-")
    data = {"login": spec.login, "amount": 1.0, "comment": "pending-sentinel"}
    started = time.perf_counter()
    tries = 0
    last = "none"
    while time.perf_counter() - started < spec.drain_timeout_s:
        tries += 1
        try:
            reply = await client.request(
                "CreditInSync", data, ext_id=ext_id, timeout=spec.sync_timeout_ms / 1000 + 5
            )
        except (TimeoutError, ConnectionError) as exc:
            last = f"client/{type(exc).__name__}"
            continue
        last = describe(reply)
        if last == "200":
            break
    return {
        "drained": last == "200",
        "tries": tries,
        "last": last,
        "seconds": round(time.perf_counter() - started, 3),
    }


def timeouts_in_log(path: Path, run: PendingRun) -> dict[str, Any] | None:
    """When the gateway timed the requests out, from its `sync_timeouts` warnings (one per
    sweep of its timer: an ISO timestamp and the number `expired`), and how long the answers
    then took to arrive here. The registry expires waiters in the order they were registered,
    which here is the plug's first, then the requests' in the order they were sent (to within
    the interleaving of connections), so the i-th request sent is matched to the sweep that
    expired the i-th waiter after the plug's. None when the log has no such lines (a gateway
    that logs timeouts differently)."""
    first = run.plug_sent or (run.sent_at[0] if run.sent else 0.0)
    sweeps = _sweeps(path, first + run.clock_offset if first else 0.0)
    if not sweeps:
        return None
    by_send = sorted(range(run.sent), key=run.sent_at.__getitem__)
    plug = int(run.plug_answer == "504/SYNC_TIMEOUT")  # its waiter was the first to expire
    gateway_ms, delivery_ms = array("d"), array("d")
    late = 0
    end = -plug  # where the next sweep starts in by_send; the plug's place is -1
    for swept_at, expired in sweeps:
        start, end = max(end, 0), end + expired
        for seq in by_send[start : max(end, 0)]:
            waited = swept_at - (run.sent_at[seq] + run.clock_offset)
            gateway_ms.append(waited * 1000)
            late += waited > run.limit_s
            if run.received_at[seq]:
                delivery_ms.append((run.received_at[seq] + run.clock_offset - swept_at) * 1000)
    return {
        "sweeps": len(sweeps),
        "expired": sum(expired for _, expired in sweeps),
        "expired_requests": sum(expired for _, expired in sweeps) - plug,  # without the plug
        "timed_out_late_by_gateway": late,
        "send_to_sweep_ms": _percentiles(sorted(gateway_ms)),
        "sweep_to_receipt_ms": _percentiles(sorted(delivery_ms)),
        "note": "wall clocks of this process and the gateway (same machine). send_to_sweep is "
        "when the gateway's timer expired the request (its intake lag included); "
        "sweep_to_receipt is the 504's way back: the gateway's write, the socket and "
        "this process's read. Matched by order, so single values are off by the "
        "interleaving of connections at intake (a few ms; a negative one is that)",
    }


def _sweeps(path: Path, since_unix: float) -> list[tuple[float, int]]:
    """(unix time, expired) of each `sync_timeouts` line from `since_unix` on: the same log
    holds the set-up process's lines."""
    sweeps = []
    with path.open("rb") as log:
        for line in log:
            if b'"sync_timeouts"' not in line:
                continue
            try:
                entry = orjson.loads(line)
                swept_at = datetime.fromisoformat(entry["timestamp"]).timestamp()
                expired = int(entry["expired"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if swept_at >= since_unix:
                sweeps.append((swept_at, expired))
    return sweeps


def _percentiles(ordered: list[float]) -> dict[str, float | None]:
    return {
        f"p{name}": _round(percentile(ordered, q))
        for name, q in (("0", 0), ("50", 50), ("99", 99), ("100", 100))
    }


def _count_records(path: Path) -> int:
    with sqlite3.connect(path, timeout=30) as db:
        count: int = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    db.close()
    return count


def _value(metrics: dict[str, float] | None, name: str) -> float | None:
    return None if metrics is None else metrics.get(name)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
