"""Latency recording on HdrHistogram: microsecond resolution in, milliseconds out.

Values are recorded in whole microseconds from 1 us to 60 s at 3 significant digits, so any
reported value is within 0.1% of a recorded one (HDR's own guarantee). A value above 60 s is
recorded as 60 s and counted in `clamped` rather than raising or vanishing: a load test that hits
it has a problem the report must show. Percentiles, mean and max of an empty histogram are `None`
(never a misleading 0.0), and its count is 0.

`Timeline` cuts the recording into intervals (1 s by default) and keeps, per interval, its
throughput and p50/p99; each closed interval's histogram is folded into the run's total.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000  # 60 s: no sane answer takes longer; a request timeout fires before
SIGNIFICANT_FIGURES = 3
REPORTED_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class LatencyHistogram:
    """An HdrHistogram of latencies in microseconds that reports in milliseconds."""

    def __init__(self) -> None:
        self.hdr = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        self.clamped = 0  # values above HIGHEST_US, recorded as HIGHEST_US

    def record_us(self, value_us: int, count: int = 1) -> None:
        """Record a latency in microseconds (sub-microsecond values count as 1 us)."""
        if value_us > HIGHEST_US:
            value_us = HIGHEST_US
            self.clamped += count
        elif value_us < LOWEST_US:
            value_us = LOWEST_US
        self.hdr.record_value(value_us, count)

    def record_seconds(self, seconds: float) -> None:
        self.record_us(int(seconds * 1_000_000 + 0.5))

    def record_many_us(self, values_us: Iterable[int]) -> None:
        for value in values_us:
            self.record_us(value)

    def merge(self, other: LatencyHistogram) -> None:
        """Add `other`'s counts (and clamped count) into this histogram."""
        if other.count:
            # HdrHistogram.add() takes the min through get_min_value(), which is 0 for an empty
            # histogram, so merging into an empty one would report a minimum of 0: keep our own.
            lowest = min(self.hdr.min_value, other.hdr.min_value)
            self.hdr.add(other.hdr)
            self.hdr.min_value = lowest
        self.clamped += other.clamped

    @property
    def count(self) -> int:
        return int(self.hdr.get_total_count())

    def percentile_ms(self, percentile: float) -> float | None:
        """The value at `percentile` (0..100) in ms, or None when nothing was recorded."""
        if not self.count:
            return None
        return _ms(self.hdr.get_value_at_percentile(percentile))

    def percentiles_ms(self, percentiles: Iterable[float]) -> dict[float, float | None]:
        """Several percentiles in one pass over the counts."""
        wanted = list(percentiles)
        if not self.count:
            return dict.fromkeys(wanted)
        values = self.hdr.get_percentile_to_value_dict(wanted)
        return {p: _ms(values[p]) for p in wanted}

    @property
    def mean_ms(self) -> float | None:
        return _ms(self.hdr.get_mean_value()) if self.count else None

    @property
    def max_ms(self) -> float | None:
        return _ms(self.hdr.get_max_value()) if self.count else None

    @property
    def min_ms(self) -> float | None:
        return _ms(self.hdr.get_min_value()) if self.count else None

    def summary(self) -> dict[str, Any]:
        """count, p50/p90/p99/p999, min, max and mean in ms (None when empty), clamped."""
        p = self.percentiles_ms(REPORTED_PERCENTILES)
        return {
            "count": self.count,
            "p50_ms": p[50.0],
            "p90_ms": p[90.0],
            "p99_ms": p[99.0],
            "p999_ms": p[99.9],
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "clamped": self.clamped,
        }

    def spectrum(self, ticks_per_half_distance: int = 5) -> list[tuple[float, float]]:
        """(quantile 0..1, value ms) steps of the percentile distribution, HDR style."""
        if not self.count:
            return []
        return [
            (item.percentile_level_iterated_to / 100.0, _ms(item.value_iterated_to))
            for item in self.hdr.get_percentile_iterator(ticks_per_half_distance)
        ]

    def encode(self) -> str:
        """The standard compressed, base64 HDR encoding (HdrHistogram tools can read it)."""
        encoded: bytes = self.hdr.encode()
        return encoded.decode("ascii")


class Timeline:
    """Latencies recorded per interval: a throughput and p50/p99 timeline, plus the total."""

    def __init__(self, start: float, interval_s: float = 1.0) -> None:
        self.start = start  # perf_counter() seconds at which the measured window opened
        self.interval_s = interval_s
        self.total = LatencyHistogram()
        self.intervals: list[dict[str, Any]] = []
        self._current = LatencyHistogram()
        self._current_start = start
        self._current_ok = 0
        self._previous: LatencyHistogram | None = None  # the last closed interval
        self._previous_ok = 0

    def record_us(self, value_us: int, ok: bool) -> None:
        """One answer: its latency, and whether it counts towards throughput."""
        self._current.record_us(value_us)
        if ok:
            self._current_ok += 1

    @property
    def next_roll_at(self) -> float:
        return self._current_start + self.interval_s

    @property
    def current_count(self) -> int:
        """Answers recorded in the interval that is still open."""
        return self._current.count

    @property
    def last(self) -> dict[str, Any] | None:
        return self.intervals[-1] if self.intervals else None

    def roll(self, now: float) -> dict[str, Any]:
        """Close the current interval at `now` and fold it into the total; returns its stats."""
        current = self._current
        stats = _interval_stats(
            current, self._current_ok, self._current_start - self.start, now - self._current_start
        )
        self.intervals.append(stats)
        self.total.merge(current)
        self._previous, self._previous_ok = current, self._current_ok
        self._current = LatencyHistogram()
        self._current_start, self._current_ok = now, 0
        return stats

    def finish(self, now: float) -> None:
        """Close the last interval. A stub shorter than half an interval joins the one before
        (a 2 ms tail would otherwise plot as a wild throughput spike)."""
        previous = self._previous
        if previous is None or now - self._current_start >= self.interval_s / 2:
            self.roll(now)
            return
        stub = self._current
        previous.merge(stub)
        self.total.merge(stub)
        last = self.intervals[-1]
        ok = self._previous_ok = self._previous_ok + self._current_ok
        last.update(_interval_stats(previous, ok, last["t"], now - self.start - last["t"]))
        self._current = LatencyHistogram()
        self._current_start, self._current_ok = now, 0


def _interval_stats(
    histogram: LatencyHistogram, ok: int, t: float, duration: float
) -> dict[str, Any]:
    duration = max(duration, 1e-9)
    p = histogram.percentiles_ms((50.0, 99.0))
    return {
        "t": round(t, 3),
        "duration_s": round(duration, 3),
        "answers": histogram.count,
        "ok": ok,
        "rps": round(ok / duration, 1),
        "p50_ms": p[50.0],
        "p99_ms": p[99.0],
    }


def _ms(value_us: float) -> float:
    return round(value_us / 1000.0, 3)
