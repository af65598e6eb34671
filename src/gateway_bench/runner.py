"""The load engine: connections, closed- and open-loop sending, timing, checking, the result.

It shares a 2-core machine with the server it measures, so the hot path is lean: answers arrive
through `GatewayClient.send_cb` callbacks (no future, no task switch; measured at about twice the
throughput of a future per request against tools/baseline_server.py), frames sent from an answer
callback leave in one write per read, and per request there is one orjson encode, one histogram
record and a few dict operations. Nothing is logged per request.

Closed loop: every connection keeps exactly `inflight` requests outstanding. Open loop: one
scheduler sends request *i* at `start + i / rate` over the connections in turn, whatever is
outstanding, and latency counts from that intended time, so a stalled server cannot hide its
stall by slowing the sender down (no coordinated omission). How late the scheduler itself ran is
reported as `scheduler_lag`.

A 1 s tick closes a timeline interval, times out requests older than `timeout_s`, and updates the
progress bar.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from typing import Any, Protocol

from .checks import AnswerChecker
from .client import GatewayClient, encode_request
from .histogram import LatencyHistogram, Timeline
from .result import LoadResult, Progress
from .setup import LoadError, prepare_connections
from .spec import LoadSpec, RequestSource

_FINANCE_KIND = {
    f"{kind}{way}{sync}": kind.lower()
    for kind in ("Balance", "Credit")
    for way in ("In", "Out")
    for sync in ("", "Sync")
}

# (intended send time, command, data, measured?)
Request = tuple[float, str, dict[str, Any], bool]


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run the load described by `spec` and return what was measured."""
    spec.validate()
    clients = await _connect(spec)
    run = _Run(spec, clients)
    try:
        await prepare_connections(spec, clients, run.next_ext_id)
        return await run.execute()
    finally:
        for client in clients:
            client.close()
        for client in clients:
            await client.wait_closed()


async def _connect(spec: LoadSpec) -> list[GatewayClient]:
    results = await asyncio.gather(
        *(GatewayClient.connect(spec.host, spec.port) for _ in range(spec.connections)),
        return_exceptions=True,
    )
    clients = [r for r in results if isinstance(r, GatewayClient)]
    failures = [r for r in results if not isinstance(r, GatewayClient)]
    if failures:
        for client in clients:
            client.close()
        raise LoadError(f"cannot connect to {spec.host}:{spec.port}: {failures[0]}")
    return clients


class _Connection:
    """One client and the requests it has outstanding, oldest first."""

    __slots__ = ("alive", "client", "inflight", "run")

    def __init__(self, run: _Run, client: GatewayClient) -> None:
        self.run = run
        self.client = client
        self.inflight: dict[str, Request] = {}
        self.alive = True

    def send(self, intended: float, measured: bool) -> None:
        run = self.run
        ext_id = run.next_ext_id()
        command, data = run.next_request()
        self.inflight[ext_id] = (intended, command, data, measured)
        run.outstanding += 1
        self.client.send_frame_cb(encode_request(command, data, ext_id), ext_id, self.answered)

    def fill(self) -> None:
        """Closed loop: top up to `inflight` outstanding requests while sending is allowed."""
        run = self.run
        while len(self.inflight) < run.spec.inflight and self.alive:
            now = time.perf_counter()
            if not run.may_send(now):
                break
            self.send(now, run.count_send(now))

    def answered(self, ext_id: str, answer: dict[str, Any] | ConnectionError) -> None:
        request = self.inflight.pop(ext_id, None)
        if request is None:
            return
        if isinstance(answer, ConnectionError):
            self.alive = False
        self.run.complete(ext_id, request, answer)
        if self.run.closed_loop:
            self.fill()
        self.run.maybe_finish()


class _RequestLimit(Protocol):
    @property
    def requests(self) -> int | None: ...


class SendWindow:
    """Whether a run may send at `at` and its count of measured sends, for the load generator's
    run and the settlement simulator's: sending stops for good at `t_end` or once `spec.requests`
    measured ones (sent at or after `t_measure`) went out."""

    spec: _RequestLimit
    sending_done: bool
    measured_sent: int
    t_measure: float
    t_end: float

    def may_send(self, at: float) -> bool:
        if self.sending_done:
            return False
        if at >= self.t_end or (
            self.spec.requests is not None and self.measured_sent >= self.spec.requests
        ):
            self.sending_done = True
            return False
        return True

    def count_send(self, at: float) -> bool:
        """Count a request sent (or intended) at `at`; True when it is measured (not warmup)."""
        if at >= self.t_measure:
            self.measured_sent += 1
            return True
        return False


class _Run(SendWindow):
    def __init__(self, spec: LoadSpec, clients: list[GatewayClient]) -> None:
        self.spec: LoadSpec = spec
        self.closed_loop = spec.closed_loop
        self.conns = [_Connection(self, client) for client in clients]
        for client in clients:
            client.on_orphan = self._orphan
        self.checker = AnswerChecker()
        self.warmup_checker = AnswerChecker()
        self.scheduler_lag = LatencyHistogram()
        self.ledger: dict[int, dict[str, int]] = {}  # login -> cents moved by ok answers
        self.timed_out: set[str] = set()
        self.late_answers = 0
        self.outstanding = 0
        self.measured_sent = 0
        self.sending_done = False
        self.next_request = RequestSource(spec.mix, spec.logins()).next
        self._ext_prefix = f"lg-{secrets.token_hex(4)}-"  # extIDs are idempotency keys: unique
        self._ext_seq = 0
        self.t_start = self.t_measure = self.t_finish = 0.0
        self.t_end = float("inf")
        self.timeline = Timeline(0.0)
        self._finished: asyncio.Future[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self.progress: Progress | None = None

    # -- request material --------------------------------------------------------------------

    def next_ext_id(self) -> str:
        self._ext_seq += 1
        return f"{self._ext_prefix}{self._ext_seq}"

    # -- phases ------------------------------------------------------------------------------

    async def execute(self) -> LoadResult:
        spec, loop = self.spec, asyncio.get_running_loop()
        self._finished = loop.create_future()
        self.t_start = time.perf_counter()
        self.t_measure = self.t_start + spec.warmup_s
        if spec.duration_s is not None:  # one addition, as the open loop's send times are
            self.t_end = self.t_start + (spec.warmup_s + spec.duration_s)
        self.timeline = Timeline(self.t_measure)
        if spec.progress:
            self.progress = Progress(spec, sys.stderr)
        self._schedule_tick(self.t_start)
        scheduler = None
        if self.closed_loop:
            for conn in self.conns:
                conn.fill()
            self.sending_done = not self.may_send(time.perf_counter())
        else:
            scheduler = asyncio.create_task(self._schedule_open_loop())
        self.maybe_finish()
        try:
            await self._finished
        finally:
            if scheduler is not None:
                scheduler.cancel()
            if self._tick_handle is not None:
                self._tick_handle.cancel()
            end = self.t_finish or time.perf_counter()
            self.timeline.finish(end)
            if self.progress is not None:
                self.progress.close(self.checker)
        return LoadResult.build(self, max(end - self.t_measure, 1e-9))

    def maybe_finish(self) -> None:
        if self.outstanding or self._finished is None or self._finished.done():
            return
        if self.closed_loop and not self.sending_done:
            if any(conn.alive for conn in self.conns):
                return
            self.sending_done = True  # every connection is gone: nothing more can be sent
        if self.sending_done:
            self.t_finish = time.perf_counter()
            self._finished.set_result(None)

    async def _schedule_open_loop(self) -> None:
        assert self.spec.rate is not None
        interval, start, conns = 1.0 / self.spec.rate, self.t_start, self.conns
        sent = turn = 0
        lag = self.scheduler_lag
        while True:
            now = time.perf_counter()
            due = start + sent * interval
            while due <= now:
                if not self.may_send(due):
                    self.maybe_finish()
                    return
                for _ in range(len(conns)):
                    conn = conns[turn % len(conns)]
                    turn += 1
                    if conn.alive:
                        break
                else:
                    self.sending_done = True
                    self.maybe_finish()
                    return
                measured = self.count_send(due)
                if measured:
                    lag.record_us(int((now - due) * 1_000_000))
                conn.send(due, measured)
                sent += 1
                due = start + sent * interval
            await asyncio.sleep(due - time.perf_counter())

    # -- answers -----------------------------------------------------------------------------

    def complete(
        self, ext_id: str, request: Request, answer: dict[str, Any] | ConnectionError
    ) -> None:
        intended, command, data, measured = request
        self.outstanding -= 1
        checker = self.checker if measured else self.warmup_checker
        if isinstance(answer, ConnectionError):
            checker.failure("client/CONNECTION_LOST")
            return
        ok = checker.check(command, ext_id, data, answer)
        if measured:
            self.timeline.record_us(int((time.perf_counter() - intended) * 1_000_000), ok)
        if ok and command in _FINANCE_KIND:
            moved = self.ledger.setdefault(data["login"], {"balance": 0, "credit": 0})
            moved[_FINANCE_KIND[command]] += round(data["amount"] * 100)

    def _orphan(self, answer: dict[str, Any]) -> None:
        ext_id = answer.get("extID")
        if isinstance(ext_id, str) and ext_id in self.timed_out:
            self.timed_out.discard(ext_id)
            self.late_answers += 1  # already counted as client/TIMEOUT
        else:
            self.checker.orphan(answer)

    # -- the tick: timeline, timeouts, progress ------------------------------------------------

    def _schedule_tick(self, now: float) -> None:
        # Next: the end of the interval (or of the warmup), sooner if a request could time out.
        target = self.timeline.next_roll_at if now >= self.t_measure else self.t_measure
        target = min(target, now + self.spec.timeout_s / 2)
        loop = asyncio.get_running_loop()
        self._tick_handle = loop.call_later(max(target - time.perf_counter(), 0.0), self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if now >= self.timeline.next_roll_at:
            stats = self.timeline.roll(now)
            if self.progress is not None:
                self.progress.update(stats, self.checker)
        self._expire(now)
        if self.closed_loop and not self.sending_done:
            self.may_send(now)  # a duration can run out while every connection waits
        self.maybe_finish()
        if self._finished is not None and not self._finished.done():
            self._schedule_tick(now)

    def _expire(self, now: float) -> None:
        oldest_allowed = now - self.spec.timeout_s
        for conn in self.conns:
            expired = []
            for ext_id, request in conn.inflight.items():  # oldest first
                if request[0] > oldest_allowed:
                    break
                expired.append(ext_id)
            for ext_id in expired:
                request = conn.inflight.pop(ext_id)
                conn.client.forget(ext_id)
                self.timed_out.add(ext_id)
                self.outstanding -= 1
                (self.checker if request[3] else self.warmup_checker).failure("client/TIMEOUT")
            if expired and self.closed_loop:
                conn.fill()
