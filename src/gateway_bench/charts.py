"""The bench's own PNGs, beside the load generator's per-run plots (`plot.plot_result`):
gateway against baseline throughput over time, the fan-out delay distribution, the gateway's
memory during the pending-Sync scenario and while the history phase fills its ledger. Built on
`Figure` with the Agg canvas, as in `plot.py`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .plot import draw_spectrum, save_figure


def comparison_chart(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """ok answers/s per interval of each load run, on one axis."""
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    for name, run in runs.items():
        times = [row["t"] + row["duration_s"] for row in run["timeline"]]
        ax.plot(
            times,
            [row["rps"] for row in run["timeline"]],
            marker=".",
            label=f"{name}: {run['rps']:,.0f} ok/s",
        )
    ax.set_title("CreditInSync throughput: gateway against the baseline server")
    ax.set_xlabel("seconds since measuring began (end of each interval)")
    ax.set_ylabel("ok answers / s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def fanout_delay_chart(fanout: dict[str, Any], path: Path) -> Path:
    """Send-to-receipt delay by percentile, HDR style (the tail spread out on a log axis)."""
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    draw_spectrum(
        ax, fanout["delay_histogram_ms"], "writer send to listener receipt (ms)", "no events"
    )
    delay = fanout["delay_ms"]
    ax.set_title(
        f"fan-out to {fanout['listeners']} listeners: {fanout['delivered_per_s']:,.0f} events/s, "
        f"p50 {delay['p50']} ms, p99 {delay['p99']} ms ({delay['count']:,} events)"
    )
    return _save(fig, path)


def pending_memory_chart(pending: dict[str, Any], path: Path) -> Path:
    """Gateway RSS while the Sync requests were pending and draining; the allocated blocks
    (what the leak check judges) in the title: RSS stays above its start after a burst."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    samples = pending.get("rss_samples") or []
    ax.plot([t for t, _ in samples], [rss for _, rss in samples], color="tab:purple")
    ax.axhline(pending["rss_before_mb"], color="gray", linestyle="--", label="before")
    blocks = [pending.get(f"allocated_blocks_{when}") for when in ("before", "peak", "after")]
    blocks_text = " -> ".join("-" if b is None else f"{b:,.0f}" for b in blocks)
    ax.set_title(
        f"pending Sync: gateway RSS, {pending['sent']:,} requests "
        f"(peak {pending['rss_peak_mb']} MB, after {pending['rss_after_mb']} MB)\n"
        f"Python allocated blocks before -> peak -> after: {blocks_text}"
    )
    ax.set_xlabel("seconds since the burst began")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def history_memory_chart(history: dict[str, Any], path: Path) -> Path:
    """Gateway RSS against operations acked during the history phase's fill, with the fill's
    rate between samples on a second axis."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    samples = history["fill"]["rss_samples"]
    acked = [row["acked"] for row in samples]
    ax.plot(acked, [row["rss_mb"] for row in samples], color="tab:purple", marker=".", label="RSS")
    ax.set_xlabel("CreditIn acked")
    ax.set_ylabel("gateway RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    rate = ax.twinx()
    rate.plot(
        acked[1:],
        [
            (b["acked"] - a["acked"]) / (b["s"] - a["s"]) if b["s"] > a["s"] else 0.0
            for a, b in itertools.pairwise(samples)
        ],
        color="tab:green",
        alpha=0.6,
        label="acks / s",
    )
    rate.set_ylabel("acks / s since the previous sample")
    rate.set_ylim(bottom=0)
    ax.set_title(
        f"history: gateway RSS over {history['fill']['acked']:,} CreditIn "
        f"({history['rss_start_mb']} -> {history['rss_half_mb']} -> {history['rss_end_mb']} MB)"
    )
    lines = ax.get_legend_handles_labels()
    more = rate.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)
