"""The bench's PostgreSQL phase at a small scale, with its real processes: every run happens,
answers check out, and each figure lands beside its target. Never how fast anything was."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_bench.postgres_phase import run_postgres
from gateway_bench.report import evaluate_targets
from gateway_bench.spec import LoadSpec

RUNS = {"sqlite", "pg-1", "pg-hot-1", "pg-2", "pg-hot-2"}


@pytest.mark.slow
async def test_the_phase_runs_sqlite_one_node_two_nodes_spread_and_hot(tmp_path: Path) -> None:
    spec = LoadSpec(
        connections=4, inflight=2, duration_s=0.5, warmup_s=0.2, accounts=5, progress=False
    )
    said: list[str] = []
    result = await run_postgres(
        spec, tmp_path / "data", tmp_path, {"ledger_synchronous": "FULL"}, said.append
    )
    assert set(result["runs"]) == RUNS
    assert result["errors"] == 0
    assert all(run["rps"] > 0 for run in result["runs"].values())
    assert [len(result["runs"][name]["nodes"]) for name in ("pg-2", "pg-hot-2")] == [2, 2]
    for key in ("one_node_vs_sqlite", "two_nodes_vs_one", "hot_vs_spread_two_nodes"):
        assert result[key] is not None and result[key] > 0
    targets = [t for t in evaluate_targets({"postgres": result}) if t.name.startswith("postgres")]
    assert [t.value for t in targets] == [
        result["one_node_vs_sqlite"],
        result["two_nodes_vs_one"],
        result["hot_vs_spread_two_nodes"],
        0,
    ]
    assert said[-1].startswith("postgres: pg-hot-2:")
    assert (tmp_path / "gateway-pg-node-2.log").is_file()
