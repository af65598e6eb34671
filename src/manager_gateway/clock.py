"""Time as a seam: the real clock rides the event loop; tests substitute a manual one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timeouts)."""

    def wall(self) -> float:
        """Unix time in seconds (record times, token expiry, idempotency TTL)."""

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Cancellable:
        """Run `callback` after `delay_s` seconds unless cancelled."""


class LoopClock:
    """The real clock: `time.time()` and the running loop's timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Cancellable:
        loop = self._loop or asyncio.get_running_loop()
        return loop.call_later(delay_s, callback)
