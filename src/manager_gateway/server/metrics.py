"""Prometheus metrics: what the gateway counts, and the HTTP endpoint that serves it.

`Metrics` owns one `CollectorRegistry` per gateway (never the process-wide default registry: the
tests run many gateways in one process). The event loop records into plain ints, fixed-size lists
and floats, with no lock and no `labels()` lookup per request; `collect()` turns them into metric
families when Prometheus scrapes. prometheus_client's own Counter and Histogram children, even
cached, take a lock per increment and scan the buckets in Python: about 1.2 us per request
against 0.35 us here (tools/metrics_overhead.py), on a hot path tuned toward 25k requests/s.

Scrapes run on the HTTP server's thread, so `collect()` only ever reads what is safe to read
beside the loop under the GIL: single numbers, `len()` of containers, one-call copies of lists
whose size never changes, and dicts whose keys are fixed at construction. It never iterates a
container the loop resizes.

Recording is on whether or not `metrics_port` serves it. It costs about 0.35 us per request, under
1% of the 40 us a request may take at 25k/s, and a no-op recorder would still pay the call and
the perf_counter() (about 0.1 us): one code path with no `if enabled` at the recording sites is
worth the difference.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from bisect import bisect_left
from collections.abc import Iterator
from concurrent.futures import CancelledError
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..commands.registry import ALL_COMMANDS
from ..protocol.errors import GatewayError
from ..runtime.storage import StorageError
from ..session.access import SessionType
from ..session.session import BALANCE_EVENT, TRADE_EVENT
from ..settlement.codes import Code
from ..settlement.http import CANCEL, ROUTES

if TYPE_CHECKING:
    from .app import Gateway

#: Request latency and ledger commit time, 0.1 ms to 10 s (a Sync request waits up to
#: sync_timeout_ms, 5 s by default, so its timeouts still land below the last bound).
DURATION_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Settlement answers, 1 ms to the platform's 3 s timeout (the answer budget is 2.5 s).
SETTLEMENT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0)
#: Operations per committed batch: powers of two up to the default max_batch.
BATCH_OPERATIONS_BUCKETS = tuple(float(2**n) for n in range(13))
#: How long a scrape waits for the ledger to count the settlement journal before leaving it out.
JOURNAL_COUNT_TIMEOUT_S = 2.0
#: Label of a `command` that is not in the command table, so clients cannot mint label values.
UNKNOWN_COMMAND = "unknown"
#: Label of a frame with no usable envelope (invalid JSON, no extID, ...): there is no command.
INVALID_COMMAND = "invalid"
EVENT_CHANNELS = (TRADE_EVENT, BALANCE_EVENT)


def _answer_statuses() -> tuple[int, ...]:
    """200 and every status of the error tree: all a request can be answered with."""
    statuses, classes = {200}, [GatewayError]
    while classes:
        cls = classes.pop()
        statuses.add(cls.status)
        classes.extend(cls.__subclasses__())
    return tuple(sorted(statuses))


STATUSES = _answer_statuses()
_STATUS_SLOT = {status: slot for slot, status in enumerate(STATUSES)}


class Buckets:
    """A histogram as plain numbers: a count per bucket (not cumulative; the last is +Inf) and
    the sum of the observed values."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (Prometheus `le`).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative (le, count) pairs and the sum, as Prometheus wants them."""
        counts = list(self.counts)  # one C-level copy: never half an update
        les = [*map(floatToGoString, self.bounds), "+Inf"]
        return list(zip(les, itertools.accumulate(counts), strict=True)), self.sum


class CommandStats:
    """One command label's answers by status (slots of STATUSES) and its latency histogram."""

    __slots__ = ("answers", "latency")

    def __init__(self) -> None:
        self.answers = [0] * len(STATUSES)
        self.latency = Buckets(DURATION_BUCKETS_S)


class Metrics(Collector):
    """Every gateway metric, recorded by the parts that see it happen, exported on scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = {name: CommandStats() for name in sorted(ALL_COMMANDS)}
        self.unknown = CommandStats()
        self.invalid = CommandStats()
        self._labelled = (
            *self.commands.items(),
            (UNKNOWN_COMMAND, self.unknown),
            (INVALID_COMMAND, self.invalid),
        )
        self.connections_accepted = 0
        self.connections_refused = 0
        #: Authenticated connections by the type of their bound token, indexed by SessionType;
        #: maintained by each `Session` as it binds a token and closes.
        self.sessions_by_type = [0] * len(SessionType)
        #: Event frames queued to recipients, per channel (keys fixed here).
        self.events_pushed = dict.fromkeys(EVENT_CHANNELS, 0)
        self.batch_operations = Buckets(BATCH_OPERATIONS_BUCKETS)
        self.commit_seconds = Buckets(DURATION_BUCKETS_S)
        self.commit_failures = 0
        # Settlement answers by (route, code) and latency by route; keys fixed here.
        self.settlement_answers = {(route, str(code)): 0 for route in ROUTES for code in Code}
        self.settlement_latency = {route: Buckets(SETTLEMENT_BUCKETS_S) for route in ROUTES}
        self._gateway: Gateway | None = None
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # CPU, memory, open fds against max_connections

    def watch(self, gateway: Gateway) -> None:
        """Also export the gauges read from the gateway's parts at scrape time."""
        self._gateway = gateway

    # -- recording (event loop) ----------------------------------------------------------------

    def request(self, command: str, status: int, started: float) -> None:
        """An answer was queued: count it, and observe the time since `started` (perf_counter)."""
        stats = self.commands.get(command, self.unknown)
        stats.answers[_STATUS_SLOT[status]] += 1
        stats.latency.observe(perf_counter() - started)

    def invalid_frame(self, status: int, started: float) -> None:
        """A frame answered without a command (its envelope was unusable)."""
        self.invalid.answers[_STATUS_SLOT[status]] += 1
        self.invalid.latency.observe(perf_counter() - started)

    def settlement_answered(self, route: str, code: str, seconds: float) -> None:
        """A settlement request was answered with `code` after `seconds`."""
        self.settlement_answers[(route, code)] += 1
        self.settlement_latency[route].observe(seconds)

    def batch_committed(self, operations: int, commit_s: float) -> None:
        self.batch_operations.observe(operations)
        self.commit_seconds.observe(commit_s)

    def commit_failed(self) -> None:
        self.commit_failures += 1

    # -- export (scrape thread) ----------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield _counter(
            "gateway_connections_accepted", "Connections admitted.", self.connections_accepted
        )
        yield _counter(
            "gateway_connections_refused",
            "Connections closed on accept (max_connections reached, or draining).",
            self.connections_refused,
        )
        sessions = GaugeMetricFamily(
            "gateway_sessions",
            "Open connections with a bound token, by the token's session type.",
            labels=("type",),
        )
        for session_type, count in zip(SessionType, list(self.sessions_by_type), strict=True):
            sessions.add_metric((session_type.name.lower(),), count)
        yield sessions
        pushed = CounterMetricFamily(
            "gateway_events_pushed",
            "Event frames queued to recipients, by event.",
            labels=("event",),
        )
        for channel in EVENT_CHANNELS:
            pushed.add_metric((channel,), self.events_pushed[channel])
        yield pushed
        yield _histogram(
            "gateway_batch_operations",
            "Operations applied per committed main-loop batch.",
            self.batch_operations,
        )
        yield _histogram(
            "gateway_batch_commit_seconds",
            "Time to write one batch durably to the ledger.",
            self.commit_seconds,
        )
        yield _counter(
            "gateway_ledger_commit_failures",
            "Batches the ledger failed to commit (their requests answered 500).",
            self.commit_failures,
        )
        yield from self._settlement()
        if self._gateway is not None:
            yield from _gateway_gauges(self._gateway)
            yield from _settlement_gauges(self._gateway)

    def _settlement(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gateway_settlement_requests",
            "Settlement requests answered, by route and code.",
            labels=("route", "code"),
        )
        cancels = CounterMetricFamily(
            "gateway_settlement_cancels",
            "Cancels answered, by outcome (the cancel route's codes).",
            labels=("outcome",),
        )
        for (route, code), count in list(self.settlement_answers.items()):
            if count:
                requests.add_metric((route, code), count)
                if route == CANCEL:
                    cancels.add_metric((code,), count)
        latency = HistogramMetricFamily(
            "gateway_settlement_request_duration_seconds",
            "From reading a settlement request to its answer, by route.",
            labels=("route",),
        )
        for route, histogram in self.settlement_latency.items():
            buckets, total = histogram.snapshot()
            latency.add_metric((route,), buckets, total)
        yield requests
        yield cancels
        yield latency

    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gateway_requests",
            "Requests answered, by command and status. command is 'unknown' for a name not in "
            "the command table and 'invalid' for a frame with no usable envelope.",
            labels=("command", "status"),
        )
        latency = HistogramMetricFamily(
            "gateway_request_duration_seconds",
            "From handling a request's frame to queuing its answer (a Sync command's wait for "
            "its event included), by command.",
            labels=("command",),
        )
        for label, stats in self._labelled:
            for status, count in zip(STATUSES, list(stats.answers), strict=True):
                if count:
                    requests.add_metric((label, str(status)), count)
            buckets, total = stats.latency.snapshot()
            if buckets[-1][1]:
                latency.add_metric((label,), buckets, total)
        yield requests
        yield latency


def _gateway_gauges(gateway: Gateway) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "gateway_connections_open", "Connections open.", value=len(gateway.hub.connections)
    )
    yield GaugeMetricFamily(
        "gateway_sync_waiters",
        "Sync requests waiting for their event.",
        value=gateway.waiters.pending,
    )
    yield GaugeMetricFamily(
        "gateway_main_loop_queued_operations",
        "Operations submitted to the main loop and not yet taken into a batch.",
        value=gateway.runtime.queue_depth,
    )
    # Live Python objects' memory blocks: unlike resident memory, which the allocator keeps after
    # a burst, this goes back down when what the burst held is freed (a leak check).
    yield GaugeMetricFamily(
        "gateway_python_allocated_blocks",
        "Memory blocks the Python allocator has handed out and not freed.",
        value=sys.getallocatedblocks(),
    )
    yield _counter(
        "gateway_sync_timeouts",
        "Sync requests answered 504 SYNC_TIMEOUT.",
        gateway.waiters.timeouts,
    )
    yield _counter(
        "gateway_slow_consumer_disconnects",
        "Connections closed because their peer stopped reading (max_outbound_bytes).",
        gateway.slow_consumer_disconnects,
    )


def _settlement_gauges(gateway: Gateway) -> Iterator[Metric]:
    service = gateway.settlement
    counters = service.rules.counters
    yield _counter(
        "gateway_settlement_past_budget",
        "Settlement requests answered SERVICE_UNAVAILABLE because the answer budget ran out.",
        service.past_budget,
    )
    yield _counter(
        "gateway_settlement_tombstones",
        "Cancels of numbers never received: tombstones written.",
        counters.tombstones,
    )
    yield _counter(
        "gateway_settlement_late_adjustments",
        "Adjustments refused REQUEST_CANCELLED because a tombstone had blocked their number.",
        counters.late_after_tombstone,
    )
    yield _counter(
        "gateway_settlement_reversals_refused",
        "Cancels refused because the reversal would take the wallet below zero.",
        counters.reversals_refused,
    )
    journal_rows = _journal_rows(gateway)
    if journal_rows is None:
        return  # the ledger is closed (shutting down) or failing: its own alerts say so
    yield GaugeMetricFamily(
        "gateway_settlement_journal_rows",
        "Rows in the settlement journal (tombstones included).",
        value=journal_rows,
    )


def _journal_rows(gateway: Gateway) -> int | None:
    """Count the journal through the ledger, on the gateway's loop (this is the scrape thread)."""
    if gateway.loop is None or gateway.loop.is_closed():
        return None
    count = asyncio.run_coroutine_threadsafe(gateway.runtime.journal_rows(), gateway.loop)
    try:
        return count.result(timeout=JOURNAL_COUNT_TIMEOUT_S)
    except (StorageError, RuntimeError, TimeoutError, CancelledError):
        count.cancel()
        return None


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _histogram(name: str, documentation: str, histogram: Buckets) -> HistogramMetricFamily:
    buckets, total = histogram.snapshot()
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


class MetricsServer:
    """prometheus_client's HTTP server, on its own thread, serving one registry."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, host, registry)
        self.port: int = self._httpd.server_port

    async def close(self) -> None:
        """Stop serving and close the port."""
        # shutdown() returns at serve_forever's next poll, up to 0.5 s away: not on the loop.
        await asyncio.to_thread(self._httpd.shutdown)
        self._httpd.server_close()
        self._thread.join()
