"""plot_result writes readable PNGs, for a normal run and for one without a single answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.image import imread

from gateway_bench.loadgen import LoadSpec, run_load
from gateway_bench.plot import plot_result

from .servers import answer_correctly, serving


def spec(port: int, **changes: Any) -> LoadSpec:
    settings: dict[str, Any] = {
        "port": port,
        "connections": 2,
        "inflight": 2,
        "duration_s": None,
        "requests": 40,
        "progress": False,
    }
    return LoadSpec(**{**settings, **changes})


async def test_plots_are_written_as_valid_pngs(tmp_path: Path) -> None:
    """The timeline and the latency distribution are PNG files an image reader can decode."""
    async with serving(answer_correctly) as server:
        result = await run_load(spec(server.port))
    paths = plot_result(result, tmp_path / "plots", "run")
    assert [path.name for path in paths] == ["run-timeline.png", "run-latency.png"]
    for path in paths:
        height, width, _ = imread(path).shape
        assert width >= 600 and height >= 400


async def test_a_run_without_answers_still_plots(tmp_path: Path) -> None:
    """A run whose every request timed out (empty histogram) still gets both plots."""
    async with serving(
        lambda request: answer_correctly(request) if request["command"] == "Unsubscribe" else []
    ) as server:
        result = await run_load(spec(server.port, requests=2, timeout_s=0.05))
    assert result.histogram.count == 0
    for path in plot_result(result, tmp_path, "empty"):
        assert imread(path).shape[0] > 0
