"""The bench's history phase at a toy scale, against real gateway processes.

It checks the phase's machinery (every stage ran, every operation acked, each start read what it
should, the figures are where the report looks for them), never how fast anything was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_bench.history_phase import (
    IN_MEMORY,
    WINDOWED,
    HistorySpec,
    _Stages,
    batch_stats,
    history_text,
    loaded_at_start,
    run_history,
)
from gateway_bench.loadgen import LoadSpec
from gateway_bench.report import assemble_results, summary_table
from gateway_bench.sessions import ScenarioError

WINDOW = 500  # the "windowed" gateway's history_window here: the fill overflows it


@pytest.mark.slow
async def test_history_phase_fills_restarts_and_compares(tmp_path: Path) -> None:
    """3,000 CreditIn over 4 accounts, a restart that reads only the window, and one run of each
    design: the in-memory one reads the whole ledger, the windowed one its window."""
    spec = HistorySpec(operations=3000, accounts=4, connections=2, inflight=50, pairs=1)
    said: list[str] = []

    def load_spec(port: int, token: str) -> LoadSpec:
        return LoadSpec(
            port=port, token=token, connections=2, inflight=2, duration_s=0.3, accounts=3,
            progress=False,
        )  # fmt: skip

    log = tmp_path / "gateway-history.log"
    result = await run_history(
        spec,
        tmp_path / "data",
        log,
        load_spec,
        {"ledger_synchronous": "NORMAL", "history_window": str(WINDOW)},
        said.append,
    )
    fill = result["fill"]
    assert fill["acked"] == fill["operations"] == 3000
    assert fill["batches"]["operations"] == 3000  # every ack was a committed operation
    assert [s["acked"] for s in fill["rss_samples"]][:2] == [0, 150]  # every operations / 20
    assert fill["rss_samples"][-1]["acked"] == 3000
    assert None not in (result["rss_start_mb"], result["rss_half_mb"], result["rss_end_mb"])
    assert result["rss_growth_mb"] == round(result["rss_end_mb"] - result["rss_half_mb"], 1)
    restart = result["restart"]
    assert restart["exit_code"] == 0 and result["restart_s"] == restart["start_s"] > 0
    assert restart["loaded"] == {"accounts": 4, "records": WINDOW, "idempotency_keys": WINDOW}
    throughput = result["throughput"]
    runs = throughput["runs"]
    assert [run["design"] for run in runs] == [WINDOWED, IN_MEMORY]
    windowed, in_memory = runs
    assert windowed["start_s"] is None  # the restarted gateway itself
    assert in_memory["start_s"] > 0
    assert windowed["records_in_memory"] == WINDOW
    assert in_memory["records_in_memory"] > 3000 and in_memory["keys_in_memory"] > 3000
    assert all(run["rps"] > 0 and run["errors"] == 0 for run in runs)
    assert throughput["ratio"] == round(windowed["rps"] / in_memory["rps"], 3)
    assert any("history fill: 3,000 / 3,000 acked" in line for line in said)
    assert "restart to listening" in history_text(result)
    document = assemble_results(
        machine={}, settings={}, runs={}, fanout=None, idle=None, pending=None, failures={},
        wall_time_s=1.0, history=result,
    )  # fmt: skip
    judged = [t for t in document["targets"] if t["name"].startswith("history:")]
    assert len(judged) == 5 and all(t["value"] is not None for t in judged)
    assert "History: 3,000 CreditIn over 4 accounts" in summary_table(document)


@pytest.mark.slow
async def test_a_refused_fill_fails_the_phase(tmp_path: Path) -> None:
    """A CreditIn the gateway refuses (here: logins that were never created, the accounts being
    made for a different range) fails the phase with the answer named."""
    spec = HistorySpec(operations=200, accounts=2, connections=1, inflight=10)
    stages = _Stages(spec, tmp_path / "data", tmp_path / "gw.log", {}, lambda _: None)
    try:
        token = await stages.create_accounts()
        shifted = HistorySpec(operations=200, accounts=2, connections=1, inflight=10, first_login=7)
        stages.spec = shifted
        with pytest.raises(ScenarioError, match="USER_NOT_FOUND"):
            await stages.fill(token)
    finally:
        await stages.stop_running()


def test_the_logs_batch_and_start_lines_are_summarised(tmp_path: Path) -> None:
    """batch_committed lines after the offset are summed; the last main_loop_started wins."""
    log = tmp_path / "gateway.log"
    log.write_text(
        '{"event": "main_loop_started", "accounts": 1, "records": 9, "idempotency_keys": 9}\n'
        '{"event": "batch_committed", "operations": 4, "commit_ms": 1.0, "total_ms": 3.0}\n'
        "manager-gateway listening on 127.0.0.1:1\n"
        '{"event": "main_loop_started", "accounts": 2, "records": 5, "idempotency_keys": 6}\n'
        '{"event": "batch_committed", "operations": 6, "commit_ms": 2.0, "total_ms": 2.5}\n'
        '{"event": "batch_committed", "operations": 10, "commit_ms": 3.0, "total_ms": 4.5}\n'
    )
    assert loaded_at_start(log) == {"accounts": 2, "records": 5, "idempotency_keys": 6}
    everything = batch_stats(log)
    assert everything is not None
    assert (everything["batches"], everything["operations"]) == (3, 20)
    offset = len(log.read_bytes().split(b"manager-gateway")[0])
    later = batch_stats(log, offset)
    assert later is not None and (later["batches"], later["operations"]) == (2, 16)
    assert later["commit_us_per_operation"] == round(5.0 * 1000 / 16, 1)
    assert later["other_us_per_operation"] == round(2.0 * 1000 / 16, 1)
    assert batch_stats(log, len(log.read_bytes())) is None


def test_the_spec_refuses_what_the_gateway_would() -> None:
    with pytest.raises(ValueError, match="operations"):
        HistorySpec(operations=1).validate()
    with pytest.raises(ValueError, match="max_inflight"):
        HistorySpec(inflight=2000).validate()
    assert HistorySpec(operations=5).half == 2
    assert HistorySpec(accounts=3).logins == range(100_000, 100_003)
