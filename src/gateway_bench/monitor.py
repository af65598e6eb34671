"""Watching a server from outside: its resident memory over time, and its own metrics if any.

Resident memory is what the operating system charges the process; CPython seldom hands freed
memory back, so after a burst RSS can stay high with nothing leaked. When the gateway serves
Prometheus metrics (setting `metrics_port`, added by a separate change and optional here), its
own gauges, such as `gateway_sync_waiters`, say whether anything is still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

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


async def scrape_metrics(host: str, port: int, timeout_s: float = 5.0) -> dict[str, float] | None:
    """GET /metrics and sum each metric's samples over their labels; None when nothing serves it."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        body = await asyncio.wait_for(reader.read(), timeout_s)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, text = body.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    return parse_metrics(text.decode(errors="replace"))


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {name: sum of its samples}; labels are folded away."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, rest = line.partition(" ") if "{" not in line else line.partition("} ")
        name = name_part.split("{", 1)[0]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        values[name] = values.get(name, 0.0) + value
    return values
