"""The simulator's PNGs: adjustments/s and p50/p99 over time, and latency by percentile, each
against the platform's answer budget. Built on `Figure` with the Agg canvas, as in `..plot`."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..plot import draw_latency_timeline, draw_spectrum, save_figure
from .simresult import SimulationResult


def plot_simulation(result: SimulationResult, out_dir: Path, name: str) -> list[Path]:
    """Write `<name>-timeline.png` and `<name>-latency.png` into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        save_figure(_timeline_figure(result, name), out_dir / f"{name}-timeline.png"),
        save_figure(_spectrum_figure(result, name), out_dir / f"{name}-latency.png"),
    ]


def _timeline_figure(result: SimulationResult, name: str) -> Figure:
    fig = Figure(figsize=(9, 6), layout="constrained")
    rate_ax, latency_ax = fig.subplots(2, 1, sharex=True)
    rows = result.timeline
    times = [row["t"] + row["duration_s"] for row in rows]
    rate_ax.plot(
        times, [row["answers"] / row["duration_s"] for row in rows], marker=".", label="answered"
    )
    rate_ax.plot(times, [row["rps"] for row in rows], marker=".", label="confirmed (0)")
    rate_ax.set_ylabel("adjustments / s")
    rate_ax.set_ylim(bottom=0)
    rate_ax.legend(loc="lower right")
    rate_ax.set_title(
        f"{name}: {result.adjustments_per_s:.0f} adjustments/s over {result.duration_s:.1f} s, "
        f"{result.measured.timeouts} timeouts, {len(result.mismatches)} wallet mismatches"
    )
    draw_latency_timeline(latency_ax, times, rows, lambda ax: _budget_line(ax, result))
    for ax in (rate_ax, latency_ax):
        ax.grid(True, alpha=0.3)
    return fig


def _spectrum_figure(result: SimulationResult, name: str) -> Figure:
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    draw_spectrum(ax, result.histogram.spectrum(), "adjustment latency (ms)", "no answers")
    _budget_line(ax, result)
    ax.legend(loc="upper left")
    summary = result.histogram.summary()
    ax.set_title(
        f"{name}: adjustment latency by percentile ({summary['count']} answers"
        + (
            f", p99 {summary['p99_ms']:.1f} ms, max {summary['max_ms']:.1f} ms)"
            if summary["count"]
            else ")"
        )
    )
    return fig


def _budget_line(ax: Axes, result: SimulationResult) -> None:
    """The platform's budget as a dashed line when the latencies come near it; far below it the
    line would flatten them into the axis, so the legend only names it."""
    budget_ms = result.spec.timeout_s * 1000
    peak = result.histogram.max_ms or 0.0
    label = f"budget {budget_ms:.0f} ms"
    if peak >= budget_ms / 4:
        ax.axhline(budget_ms, color="gray", linestyle="--", label=label)
    else:
        ax.plot([], [], color="gray", linestyle="--", label=f"{label} (off the scale)")
