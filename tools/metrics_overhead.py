"""Per-request cost of the metrics recording, against prometheus_client's own labelled children.

    .venv/bin/python tools/metrics_overhead.py

Times what a connection adds per request (a perf_counter() when the frame is handled, then
`Metrics.request()` once the answer is queued) and, for comparison, the same counts kept in a
cached prometheus_client Counter child and Histogram child. Prints nanoseconds per request, the
best of several repeats (the least disturbed by other work on the machine). A figure, not a test.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, Histogram

from manager_gateway.server.metrics import DURATION_BUCKETS_S, Metrics

NUMBER = 200_000
REPEAT = 7


def best_ns(work: Callable[[], None]) -> float:
    """Best time of one call, in nanoseconds, less the cost of calling an empty function."""

    def empty() -> None:
        pass

    def best(fn: Callable[[], None]) -> float:
        return min(timeit.repeat(fn, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e9

    return best(work) - best(empty)


def main() -> None:
    metrics = Metrics()

    def ours() -> None:
        started = perf_counter()
        metrics.request("CreditIn", 200, started)

    def ours_unknown() -> None:
        started = perf_counter()
        metrics.request("NoSuchCommand", 404, started)

    registry = CollectorRegistry()
    requests = Counter("r_total", "r", ("command", "status"), registry=registry)
    latency = Histogram(
        "d_seconds", "d", ("command",), registry=registry, buckets=DURATION_BUCKETS_S
    )
    children = {"CreditIn": ({200: requests.labels("CreditIn", "200")}, latency.labels("CreditIn"))}

    def library_children() -> None:
        started = perf_counter()
        by_status, histogram = children["CreditIn"]
        by_status[200].inc()
        histogram.observe(perf_counter() - started)

    def no_metrics() -> None:
        perf_counter()

    print(f"one perf_counter() alone:                  {best_ns(no_metrics):6.0f} ns")
    print(f"Metrics.request, known command:            {best_ns(ours):6.0f} ns")
    print(f"Metrics.request, unknown command:          {best_ns(ours_unknown):6.0f} ns")
    print(f"prometheus_client cached children instead: {best_ns(library_children):6.0f} ns")


if __name__ == "__main__":
    main()
