"""Pending Sync requests against a stalled main loop: every one must time out on time, none leak.

The main loop is stalled from outside, without touching the gateway: this process opens the
ledger file and holds SQLite's write lock (`BEGIN IMMEDIATE`), so the gateway's next commit waits
in its busy handler (busy_timeout 5 s) and then fails, batch after batch. Accounts are created
before the lock is taken. Then `requests` `CreditInSync` go out over `connections` sessions
(event channels off, at most `max_per_connection` each, under max_inflight), as fast as the
gateway reads them: HealthCheck probes between chunks keep what is sent but unread small, so
the gateway's timers, not a backlog this process made in the socket buffers, are what is
measured (`pending_peak` says how many were outstanding at once). Each must be answered
`504 SYNC_TIMEOUT` within `sync_timeout_ms + slack_ms` of its send.

Then the lock is released and the queue drains: a sentinel `CreditInSync`, sent after every
answer arrived (so after every operation was queued), is answered only once the main loop has
worked through everything ahead of it; a 504 for the sentinel is retried under the same extID,
which waits for the same outcome (PROTOCOL.md section 7). Memory is read before, at the peak and
after. The operations still complete after their timeout (section 6), so the ledger grows by
up to `requests` records and keys: "after" includes that state, not just leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
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

WAITER_METRICS = ("gateway_sync_waiters", "gateway_main_loop_queued_operations",
                  "gateway_connections_open", "process_resident_memory_bytes")


@dataclass
class PendingSpec:
    requests: int = 100_000
    connections: int = 100
    max_per_connection: int = 1000  # under the gateway's max_inflight (1024)
    probe_every: int = 10  # requests per connection between HealthCheck probes (see send_all)
    probe_timeout_s: float = 30.0
    sync_timeout_ms: int = 5000  # the gateway's setting (it is started with it)
    slack_ms: int = 100  # an answer later than timeout + slack after its send is late
    accounts: int = 100
    first_login: int = 700_000
    answer_grace_s: float = 10.0  # after the last send + timeout: how long to wait for answers
    drain_timeout_s: float = 120.0
    metrics_port: int | None = None
    create_accounts: bool = True  # False: `prepare_accounts` ran already (on another process)


class PendingRun:
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
        await asyncio.gather(*(
            self._feed(client, range(i, self.spec.requests, len(clients)))
            for i, client in enumerate(clients)
        ))

    async def _feed(self, client: GatewayClient, seqs: range) -> None:
        spec = self.spec
        for first in range(0, len(seqs), spec.probe_every):
            for seq in seqs[first:first + spec.probe_every]:
                data = {"login": spec.first_login + seq % spec.accounts, "amount": 1.0,
                        "comment": f"pending-{seq}"}
                ext_id = f"{self.ext_prefix}{seq}"
                self.sent_at[seq] = time.perf_counter()
                self.sent += 1
                client.send_frame_cb(encode_request("CreditInSync", data, ext_id), ext_id,
                                     self._callback(seq))
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
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30,
                                   check_same_thread=False)
        self._db.execute("BEGIN IMMEDIATE")
        self.held_since = time.perf_counter()

    def release(self) -> float:
        """Roll back (nothing was written) and close; returns how long the lock was held."""
        self._db.execute("ROLLBACK")
        self._db.close()
        return time.perf_counter() - self.held_since


async def run_pending(
    host: str, port: int, token: str, ledger_path: Path, spec: PendingSpec,
    read_rss: Callable[[], int], gateway_log: Path | None = None,
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
            await create_accounts(clients[0], _logins(spec), "pending")
        metrics_before = await _metrics(host, spec.metrics_port)
        rss_before = read_rss()
        sampler.start()
        lock = await asyncio.to_thread(LedgerLock, ledger_path)
        try:
            started, started_unix = time.perf_counter(), time.time()
            await run.send_all(clients)
            send_s = time.perf_counter() - started
            metrics_peak = await _metrics(host, spec.metrics_port)
            wait_s = spec.sync_timeout_ms / 1000 + spec.answer_grace_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.all_answered), wait_s)
            answered_s = time.perf_counter() - started
        finally:
            held_s = await asyncio.to_thread(lock.release)
        drain = await _drain(clients[0], spec)
        records = await asyncio.to_thread(_count_records, ledger_path)
        rss_peak = await sampler.stop()
        rss_after = read_rss()
        metrics_after = await _metrics(host, spec.metrics_port)
    finally:
        await sampler.stop()
        run.closing = True
        await close_clients(clients)
    latencies = sorted(run.latency_ms)
    missing = spec.requests - sum(run.answered)
    logged = None if gateway_log is None else await asyncio.to_thread(
        timeouts_in_log, gateway_log, run
    )
    return {
        "spec": asdict(spec),
        "sent": run.sent,
        "send_started_unix": round(started_unix, 3),  # to line up with the gateway's log
        "send_s": round(send_s, 3),
        "send_rate_per_s": round(run.sent / max(send_s, 1e-9), 1),
        "pending_peak": run.pending_peak,
        "probe_failures": run.probe_failures,
        "answers": dict(run.outcomes),
        "timed_out_on_time": run.on_time,
        "timed_out_late": run.late,
        "not_504": sum(n for kind, n in run.outcomes.items() if kind != "504/SYNC_TIMEOUT"),
        "missing": missing,
        "duplicates": run.duplicates,
        "all_on_time": run.on_time == spec.requests,
        "answer_ms": _percentiles(latencies),
        "limit_ms": spec.sync_timeout_ms + spec.slack_ms,
        "gateway_logged_timeouts": logged,
        "answered_after_s": round(answered_s, 3),
        "lock_held_s": round(held_s, 3),
        "drain": drain,
        "ledger_records_after": records,
        "rss_before_mb": mb(rss_before),
        "rss_peak_mb": mb(rss_peak),
        "rss_after_mb": mb(rss_after),
        "rss_after_minus_before_mb": mb(rss_after - rss_before),
        "rss_samples": [[t, mb(v)] for t, v in sampler.samples[:: max(1, len(sampler.samples)
                                                                     // 200)]],
        "gateway_metrics": {"before": metrics_before, "peak": metrics_peak,
                            "after": metrics_after},
        "waiters_after": None if metrics_after is None
        else metrics_after.get("gateway_sync_waiters"),
        "memory_note": "operations complete after their timeout, so the ledger state grows by "
                       "the applied records and idempotency keys; CPython also keeps freed "
                       "memory, so RSS after is an upper bound of what is still held",
    }


async def prepare_accounts(host: str, port: int, token: str, spec: PendingSpec) -> None:
    """Create the scenario's accounts. Run on a gateway of its own, the password hashing's
    memory is not counted in the scenario's "before" (AddUser hashes with scrypt, 16 MiB)."""
    clients, failures = await open_clients(host, port, 1)
    if failures:
        raise ScenarioError(f"cannot connect: {dict(failures)}")
    try:
        await bind_sessions(clients, token, events=False)
        await create_accounts(clients[0], _logins(spec), "pending")
    finally:
        await close_clients(clients)


def _logins(spec: PendingSpec) -> range:
    return range(spec.first_login, spec.first_login + spec.accounts)


async def _drain(client: GatewayClient, spec: PendingSpec) -> dict[str, Any]:
    """A sentinel Sync, retried under one extID until 200: everything queued before it is done."""
    ext_id = next_ext_id("pd-sentinel-")
    data = {"login": spec.first_login, "amount": 1.0, "comment": "pending-sentinel"}
    started = time.perf_counter()
    tries = 0
    last = "none"
    while time.perf_counter() - started < spec.drain_timeout_s:
        tries += 1
        try:
            reply = await client.request("CreditInSync", data, ext_id=ext_id,
                                         timeout=spec.sync_timeout_ms / 1000 + 5)
        except (TimeoutError, ConnectionError) as exc:
            last = f"client/{type(exc).__name__}"
            continue
        last = describe(reply)
        if last == "200":
            break
    return {"drained": last == "200", "tries": tries, "last": last,
            "seconds": round(time.perf_counter() - started, 3)}


def timeouts_in_log(path: Path, run: PendingRun) -> dict[str, Any] | None:
    """When the gateway timed the requests out, from its `sync_timeouts` warnings (one per
    sweep of its timer: an ISO timestamp and the number `expired`), and how long the answers
    then took to arrive here. The registry expires waiters in the order they were registered,
    which here is the order they were sent (to within the interleaving of connections), so
    the i-th request sent is matched to the sweep that expired the i-th waiter. None when the
    log has no such lines (a gateway that logs timeouts differently)."""
    first_sent = run.sent_at[0] + run.clock_offset if run.sent else 0.0
    sweeps: list[tuple[float, int]] = []
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
            if swept_at >= first_sent:  # the same log holds the set-up process's lines
                sweeps.append((swept_at, expired))
    if not sweeps:
        return None
    by_send = sorted(range(run.sent), key=run.sent_at.__getitem__)
    gateway_ms, delivery_ms = array("d"), array("d")
    late = matched = 0
    for swept_at, expired in sweeps:
        for seq in by_send[matched:matched + expired]:
            waited = swept_at - (run.sent_at[seq] + run.clock_offset)
            gateway_ms.append(waited * 1000)
            late += waited > run.limit_s
            if run.received_at[seq]:
                delivery_ms.append((run.received_at[seq] + run.clock_offset - swept_at) * 1000)
        matched = min(matched + expired, len(by_send))
    return {
        "sweeps": len(sweeps),
        "expired": sum(expired for _, expired in sweeps),
        "timed_out_late_by_gateway": late,
        "send_to_sweep_ms": _percentiles(sorted(gateway_ms)),
        "sweep_to_receipt_ms": _percentiles(sorted(delivery_ms)),
        "note": "wall clocks of this process and the gateway (same machine). send_to_sweep is "
                "when the gateway's timer expired the request (its intake lag included); "
                "sweep_to_receipt is the 504's way back: the gateway's write, the socket and "
                "this process's read. Matched by order, so single values are off by the "
                "interleaving of connections at intake (a few ms; a negative one is that)",
    }


def _percentiles(ordered: list[float]) -> dict[str, float | None]:
    return {f"p{name}": _round(percentile(ordered, q)) for name, q in
            (("0", 0), ("50", 50), ("99", 99), ("100", 100))}


def _count_records(path: Path) -> int:
    with sqlite3.connect(path, timeout=30) as db:
        count: int = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    db.close()
    return count


async def _metrics(host: str, port: int | None) -> dict[str, float] | None:
    if port is None:
        return None
    values = await scrape_metrics(host, port)
    if values is None:
        return None
    return {name: values[name] for name in WAITER_METRICS if name in values}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
