"""Idle sessions: many authenticated connections held open, and what they cost the gateway.

Each connection is opened (at most `parallel` at a time, so the accept backlog is not overrun)
and sends one authenticated request, `Subscribe` with no channels: it binds the token and leaves
the default event channels on, like a silent event listener. With all of them held, a
`HealthCheck` on a fresh connection proves the gateway still answers, and its resident memory is
read; then they are all closed and it is read again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .monitor import scrape_metrics
from .sessions import (
    close_clients,
    mb,
    open_clients,
    outcome,
    raise_file_limit,
    request_all,
)


@dataclass
class IdleSpec:
    connections: int = 10_000
    parallel: int = 200  # connects and first requests outstanding at a time
    metrics_port: int | None = None  # the gateway's Prometheus endpoint, when it serves one


#: The gauges the scenario reports.
GAUGES = ("gateway_connections_open", "gateway_sessions", "process_resident_memory_bytes")


async def run_idle(
    host: str, port: int, token: str, spec: IdleSpec, read_rss: Callable[[], int]
) -> dict[str, Any]:
    """Open, authenticate and hold `spec.connections` sessions; returns counts and memory."""
    soft, hard = raise_file_limit()
    rss_before = read_rss()
    started = time.perf_counter()
    clients, connect_failures = await open_clients(
        host, port, spec.connections, parallel=spec.parallel
    )
    connected_s = time.perf_counter() - started
    outcomes = await request_all(
        clients, "Subscribe", {"chanels": []}, token=token, parallel=spec.parallel
    )
    authenticated_s = time.perf_counter() - started
    probe_clients, _ = await open_clients(host, port, 1)
    health = "client/CONNECT_FAILED"
    health_ms = None
    if probe_clients:
        t0 = time.perf_counter()
        health = await outcome(probe_clients[0], "HealthCheck", {})
        health_ms = round((time.perf_counter() - t0) * 1000, 3)
    rss_held = read_rss()
    metrics_held = await scrape_metrics(host, spec.metrics_port, GAUGES)
    still_open = sum(1 for client in clients if not client.closed)
    await close_clients(clients)
    # The gateway notices the closes in its own time; a round trip on the probe connection
    # comes after it has read those EOFs (they were queued first), then memory is read.
    health_after = await outcome(probe_clients[0], "HealthCheck", {}) if probe_clients else None
    await wait_closed_by_gateway(host, spec.metrics_port, expected=1)
    rss_after = read_rss()
    metrics_after = await scrape_metrics(host, spec.metrics_port, GAUGES)
    await close_clients(probe_clients)
    held = outcomes.get("200", 0)
    return {
        "spec": asdict(spec),
        "file_limit": {"soft": soft, "hard": hard},
        "connected": len(clients),
        "connect_failures": dict(connect_failures),
        "authenticated": held,
        "request_outcomes": dict(outcomes),
        "held_open": still_open,
        "connect_s": round(connected_s, 3),
        "connect_and_authenticate_s": round(authenticated_s, 3),
        "health_check": health,
        "health_check_ms": health_ms,
        "health_check_after_close": health_after,
        "rss_before_mb": mb(rss_before),
        "rss_held_mb": mb(rss_held),
        "rss_after_mb": mb(rss_after),
        "rss_per_connection_kb": (
            round((rss_held - rss_before) / held / 1024, 2) if held else None
        ),
        "gateway_metrics_held": metrics_held,
        "gateway_metrics_after": metrics_after,
    }


async def wait_closed_by_gateway(
    host: str, port: int | None, expected: int, rounds: int = 50
) -> bool:
    """With metrics: poll until at most `expected` connections are open (True if reached)."""
    if port is None:
        return False
    for _ in range(rounds):
        values = await scrape_metrics(host, port)
        if values is None or "gateway_connections_open" not in values:
            return False  # no metrics endpoint (or no such gauge): nothing to wait for
        if values["gateway_connections_open"] <= expected:
            return True
        await asyncio.sleep(0.1)  # polling an outside gauge; nothing to wait on instead
    return False
