"""Watching a server from outside: its resident memory over time, and its own metrics if any.

Resident memory is what the operating system charges the process; CPython seldom hands freed
memory back, so after a burst RSS can stay high with nothing leaked. When the gateway serves
Prometheus metrics (setting `metrics_port`; optional here), its
own gauges, such as `gateway_sync_waiters`, say whether anything is still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.request
from collections.abc import Callable, Iterable

from prometheus_client.parser import text_string_to_metric_families

SAMPLE_INTERVAL_S = 0.05


class RssSampler:
    """Samples `read_rss()` every `interval_s` in a task; keeps the peak and the series."""

    def __init__(self, read_rss: Callable[[], int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._read = read_rss
        self._interval_s = interval_s
        self.peak = 0
        self.samples: list[tuple[float, int]] = []  # (seconds since start, bytes)
        self._start = 0.0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> int:
        value = self._read()
        self.peak = max(self.peak, value)
        self.samples.append((round(time.perf_counter() - self._start, 3), value))
        return value

    def start(self) -> None:
        self._start = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> int:
        """Stop sampling (taking one last sample); returns the peak."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(OSError, ProcessLookupError):
            self.sample()
        return self.peak

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, ProcessLookupError):
                self.sample()
            await asyncio.sleep(self._interval_s)  # a sampling period, not a synchronisation


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for the gateway's metrics endpoint)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def scrape_metrics(
    host: str, port: int | None, names: Iterable[str] | None = None, timeout_s: float = 5.0
) -> dict[str, float] | None:
    """GET /metrics and sum each sample's value per name over its labels (only `names`, when
    given); None when there is no port or nothing serves it. Parsed by prometheus_client."""
    if port is None:
        return None
    url = f"http://{host}:{port}/metrics"
    try:
        text = await asyncio.to_thread(_get, url, timeout_s)
    except (OSError, ValueError):
        return None
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    if names is None:
        return values
    return {name: values[name] for name in names if name in values}


def _get(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
    return body.decode(errors="replace")
