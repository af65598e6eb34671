"""Latency histogram maths: percentiles within HDR precision, merging, empties, clamping."""

from __future__ import annotations

import pytest
from hdrh.histogram import HdrHistogram

from gateway_bench.histogram import HIGHEST_US, LatencyHistogram, Timeline

PRECISION = 0.001  # 3 significant digits: any reported value is within 0.1% of a recorded one


def uniform_1_to_10000_us() -> LatencyHistogram:
    histogram = LatencyHistogram()
    histogram.record_many_us(range(1, 10_001))
    return histogram


def test_known_inputs_give_known_percentiles() -> None:
    """1..10,000 us once each: p50 5 ms, p90 9 ms, p99 9.9 ms, max 10 ms, mean 5 ms (0.1%)."""
    summary = uniform_1_to_10000_us().summary()
    for key, expected in (
        ("p50_ms", 5.0),
        ("p90_ms", 9.0),
        ("p99_ms", 9.9),
        ("p999_ms", 9.99),
        ("max_ms", 10.0),
        ("mean_ms", 5.0005),
    ):
        assert summary[key] == pytest.approx(expected, rel=PRECISION), key
    assert summary["count"] == 10_000 and summary["min_ms"] == 0.001 and summary["clamped"] == 0


def test_small_values_are_exact() -> None:
    """Below 2 ms every microsecond has its own bucket: 3 values give exact percentiles."""
    histogram = LatencyHistogram()
    for value in (100, 200, 300):
        histogram.record_us(value)
    assert histogram.percentiles_ms((0.0, 50.0, 100.0)) == {0.0: 0.1, 50.0: 0.2, 100.0: 0.3}
    assert histogram.percentile_ms(50) == 0.2


def test_merge_adds_counts_and_keeps_min_and_max() -> None:
    """Merging two histograms adds their counts; min and max are those of the union, also when
    merging into an empty histogram (HdrHistogram.add alone would report a min of 0)."""
    low, high, total = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    low.record_many_us([500] * 3)
    high.record_many_us([1500] * 2)
    total.merge(low)
    total.merge(high)
    total.merge(LatencyHistogram())
    assert total.count == 5 and low.count == 3
    assert total.min_ms == 0.5 and total.max_ms == pytest.approx(1.5, rel=PRECISION)
    assert total.percentile_ms(60) == 0.5
    assert total.percentile_ms(80) == pytest.approx(1.5, rel=PRECISION)


def test_empty_histogram_reports_zero_count_and_none() -> None:
    """An empty histogram has count 0 and None for every latency figure, and no spectrum."""
    histogram = LatencyHistogram()
    summary = histogram.summary()
    assert summary["count"] == 0 and summary["clamped"] == 0
    assert all(
        summary[key] is None
        for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "min_ms", "max_ms", "mean_ms")
    )
    assert histogram.percentile_ms(99) is None and histogram.spectrum() == []


def test_values_above_the_max_are_clamped_and_counted() -> None:
    """A value over 60 s is recorded as 60 s and counted in clamped; no exception, not lost."""
    histogram = LatencyHistogram()
    histogram.record_us(HIGHEST_US * 10)
    histogram.record_us(1_000)
    assert histogram.count == 2 and histogram.clamped == 1
    assert histogram.max_ms == pytest.approx(60_000, rel=PRECISION)
    other = LatencyHistogram()
    other.merge(histogram)
    assert other.clamped == 1


def test_values_below_one_microsecond_count_as_one() -> None:
    """Zero and negative durations (clock granularity) are recorded as 1 us, not dropped."""
    histogram = LatencyHistogram()
    histogram.record_us(0)
    histogram.record_seconds(-0.000001)
    assert histogram.count == 2 and histogram.max_ms == 0.001


def test_spectrum_rises_to_the_maximum() -> None:
    """The percentile spectrum runs from quantile 0 to 1 with non-decreasing latencies."""
    spectrum = uniform_1_to_10000_us().spectrum()
    quantiles, values = zip(*spectrum, strict=True)
    assert quantiles[0] == 0.0 and quantiles[-1] == 1.0
    assert list(values) == sorted(values)
    assert values[-1] == pytest.approx(10.0, rel=PRECISION)


def test_encode_round_trips_through_hdrhistogram() -> None:
    """encode() gives the standard HDR string; decoding it gives the same counts."""
    decoded = HdrHistogram.decode(uniform_1_to_10000_us().encode())
    assert decoded.get_total_count() == 10_000
    assert decoded.get_value_at_percentile(50) == pytest.approx(5000, rel=PRECISION)


def test_timeline_keeps_per_interval_rate_and_percentiles() -> None:
    """Each rolled interval reports its own ok rate and p50/p99; the total holds them all."""
    timeline = Timeline(start=100.0)
    for _ in range(10):
        timeline.record_us(1_000, ok=True)
    first = timeline.roll(101.0)
    for _ in range(4):
        timeline.record_us(3_000, ok=True)
    timeline.record_us(3_000, ok=False)
    second = timeline.roll(102.0)
    assert (first["t"], first["answers"], first["ok"], first["rps"]) == (0.0, 10, 10, 10.0)
    assert first["p50_ms"] == first["p99_ms"] == 1.0
    assert (second["t"], second["answers"], second["ok"], second["rps"]) == (1.0, 5, 4, 4.0)
    assert second["p50_ms"] == pytest.approx(3.0, rel=PRECISION)
    assert timeline.total.count == 15 and timeline.intervals == [first, second]


def test_timeline_folds_a_short_last_stub_into_the_interval_before() -> None:
    """finish() joins a tail shorter than half an interval to the previous one instead of
    reporting a spike of throughput over a few milliseconds."""
    timeline = Timeline(start=0.0)
    for _ in range(10):
        timeline.record_us(1_000, ok=True)
    timeline.roll(1.0)
    for _ in range(2):
        timeline.record_us(2_000, ok=True)
    timeline.finish(1.2)
    assert len(timeline.intervals) == 1
    last = timeline.intervals[0]
    assert (last["answers"], last["ok"], last["duration_s"], last["rps"]) == (12, 12, 1.2, 10.0)
    assert timeline.total.count == 12


def test_timeline_finish_rolls_a_long_last_interval_or_an_only_one() -> None:
    """finish() keeps a last interval of at least half an interval, and always reports one."""
    timeline = Timeline(start=0.0)
    timeline.record_us(1_000, ok=True)
    timeline.finish(0.1)
    assert len(timeline.intervals) == 1 and timeline.intervals[0]["rps"] == 10.0
    longer = Timeline(start=0.0)
    longer.roll(1.0)
    longer.record_us(1_000, ok=True)
    longer.finish(1.6)
    assert [row["answers"] for row in longer.intervals] == [0, 1]
    assert longer.intervals[0]["p50_ms"] is None
