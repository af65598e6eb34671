"""PNG plots of a load run: throughput and p50/p99 over time, and the latency distribution.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so
nothing global (no GUI backend, no figure registry) is touched and plotting is safe in tests.
The distribution is HDR style: latency against the percentile on a `1/(1-q)` log axis, which
spreads the tail (90%, 99%, 99.9%, ...) evenly instead of squashing it against the right edge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from .result import LoadResult

_TAIL_TICKS = (0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999)


def plot_result(result: LoadResult, out_dir: Path, name: str) -> list[Path]:
    """Write `<name>-timeline.png` and `<name>-latency.png` into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        save_figure(_timeline_figure(result, name), out_dir / f"{name}-timeline.png"),
        save_figure(_distribution_figure(result, name), out_dir / f"{name}-latency.png"),
    ]


def _timeline_figure(result: LoadResult, name: str) -> Figure:
    fig = Figure(figsize=(9, 6), layout="constrained")
    rate_ax, latency_ax = fig.subplots(2, 1, sharex=True)
    times = [row["t"] + row["duration_s"] for row in result.timeline]
    rate_ax.plot(times, [row["rps"] for row in result.timeline], marker=".", color="tab:blue")
    rate_ax.set_ylabel("ok answers / s")
    rate_ax.set_ylim(bottom=0)
    rate_ax.set_title(f"{name}: {result.rps:.0f} ok/s over {result.duration_s:.1f} s")
    draw_latency_timeline(latency_ax, times, result.timeline)
    for ax in (rate_ax, latency_ax):
        ax.grid(True, alpha=0.3)
    return fig


def draw_latency_timeline(
    ax: Axes,
    times: Sequence[float],
    rows: Sequence[Mapping[str, Any]],
    overlay: Callable[[Axes], None] | None = None,
) -> None:
    """Each interval's p50 and p99 at `times`; `overlay` draws more on `ax` before it is scaled
    and given its labels and legend."""
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        points = [(t, row[key]) for t, row in zip(times, rows, strict=True) if row[key] is not None]
        ax.plot([t for t, _ in points], [v for _, v in points], marker=".", label=label)
    if overlay is not None:
        overlay(ax)
    ax.set_ylabel("latency (ms)")
    ax.set_xlabel("seconds since measuring began (end of each interval)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")


def _distribution_figure(result: LoadResult, name: str) -> Figure:
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    draw_spectrum(ax, result.histogram.spectrum(), "latency (ms)", "no answers")
    summary = result.histogram.summary()
    ax.set_title(
        f"{name}: latency by percentile ({summary['count']} answers"
        + (f", max {summary['max_ms']:.2f} ms)" if summary["count"] else ")")
    )
    return fig


def draw_spectrum(
    ax: Axes, spectrum: Iterable[tuple[float, float]], ylabel: str, empty: str
) -> None:
    """Milliseconds by percentile `q` on a 1/(1-q) log axis (HDR style), ticks at the usual
    percentiles down to about ten times the deepest one measured; `empty` when there is none."""
    # The last step of a spectrum is q = 1, which the 1/(1-q) axis cannot place.
    points = [(q, ms) for q, ms in spectrum if q < 1.0]
    if points:
        ax.plot([1 / (1 - q) for q, _ in points], [ms for _, ms in points], color="tab:red")
        deepest = max(1 / (1 - q) for q, _ in points)
        ticks = [t for t in _TAIL_TICKS if 1 / (1 - t) <= deepest * 10]
    else:
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center")
        ticks = list(_TAIL_TICKS[:3])
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([1 / (1 - t) for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t * 100:g}%" for t in ticks])
    ax.set_xlabel("percentile")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, which="major", alpha=0.3)


def save_figure(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path
