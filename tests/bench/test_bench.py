"""tools/bench: arguments, results.json assembly, target judgement, and a tiny whole run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway_bench.bench import PHASES, build_parser, main, options_from_args
from gateway_bench.phases import DEFAULT_PHASES
from gateway_bench.report import assemble_results, evaluate_targets, summary_table


def options(*argv: str) -> Any:
    return options_from_args(build_parser().parse_args(["--out", "/tmp/x", *argv]))


def test_quick_and_full_profiles_set_durations() -> None:
    """--quick shortens every run; the full profile measures 60 s per load run."""
    quick, full = options("--quick"), options()
    assert (quick.mode, quick.duration_s, quick.warmup_s) == ("quick", 15.0, 3.0)
    assert (full.mode, full.duration_s) == ("full", 60.0)
    assert quick.fanout.duration_s < full.fanout.duration_s


def test_overrides_reach_every_phase() -> None:
    """--duration, --connections, --inflight and --accounts override the profile."""
    o = options(
        "--quick",
        "--duration",
        "4",
        "--warmup",
        "0",
        "--connections",
        "8",
        "--inflight",
        "2",
        "--accounts",
        "7",
        "--pending-requests",
        "2500",
    )
    assert (o.duration_s, o.warmup_s, o.connections, o.inflight) == (4.0, 0.0, 8, 2)
    assert o.fanout.accounts == 7
    assert o.fanout.duration_s == 4.0 and o.fanout.warmup_s == 0.0
    assert o.pending.requests == 2500 and o.pending.connections == 3  # 1000 per connection


def test_settlement_phases_follow_the_load_runs_settings() -> None:
    """The settlement phase measures as long as the CreditInSync run over as many accounts; the
    fault run is as long as its profile says, shorter with --duration, never under twice the
    hold, and its gateway gets the budget asked for."""
    quick = options("--quick", "--accounts", "7")
    assert (quick.settlement.duration_s, quick.settlement.warmup_s) == (15.0, 3.0)
    assert quick.settlement.accounts == quick.settlement_fault.accounts == 7
    assert quick.settlement.concurrency == 50
    assert (quick.settlement_fault.duration_s, quick.settlement_fault.hold_s) == (10.0, 4.0)
    assert options().settlement_fault.duration_s == 20.0
    tiny = options(
        "--duration", "0.5", "--settlement-concurrency", "3", "--fault-hold", "1",
        "--fault-budget-ms", "200",
    )  # fmt: skip
    assert tiny.settlement.concurrency == 3 and tiny.settlement.reference_s == 0.5
    assert quick.settlement.reference_s == 3.0
    assert (tiny.settlement_fault.duration_s, tiny.settlement_fault.answer_budget_ms) == (2.0, 200)
    assert {"settlement", "settlement-fault"} <= set(PHASES)


def test_a_hold_the_gateway_would_not_wait_out_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hold longer than the fault gateway's busy timeout is refused with exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", "/tmp/x", "--fault-hold", "90"])
    assert exit_info.value.code == 2
    assert "outlast the hold" in capsys.readouterr().err


def test_skip_takes_known_phases_only(capsys: pytest.CaptureFixture[str]) -> None:
    """--skip accepts a comma list of phases and refuses an unknown one with exit 2."""
    assert options("--skip", "fanout, idle").skip == {"fanout", "idle"}
    with pytest.raises(SystemExit) as exit_info:
        options("--skip", "fanout,nonsense")
    assert exit_info.value.code == 2
    assert "nonsense" in capsys.readouterr().err


def test_history_runs_only_when_asked_for() -> None:
    """By default every phase but history runs; --phase names the phases to run and --skip takes
    some out of those; the history options reach its spec."""
    default = options()
    assert "history" in PHASES and "history" not in DEFAULT_PHASES
    assert [name for name in PHASES if default.runs(name)] == list(DEFAULT_PHASES)
    assert default.settings()["phases"] == list(DEFAULT_PHASES)
    only = options("--phase", "history", "--history-operations", "5000")
    assert [name for name in PHASES if only.runs(name)] == ["history"]
    assert only.history.operations == 5000 and only.history.accounts == 1000
    assert options().history.operations == 2_000_000
    both = options("--phase", "load,history", "--skip", "load", "--history-accounts", "7")
    assert [name for name in PHASES if both.runs(name)] == ["history"]
    assert both.history.logins == range(100_000, 100_007)


def test_a_history_fill_of_one_operation_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", "/tmp/x", "--phase", "history", "--history-operations", "1"])
    assert exit_info.value.code == 2
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [[], ["--out", "d", "--duration", "0"], ["--out", "d", "--connections", "-1"]]
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    """No --out, or a non-positive duration or count, is a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2


def load_run(
    rps: float, p50: float, p99: float, errors: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors or {},
        "mismatches": 0,
        "timeline": [],
    }


FANOUT = {
    "listeners": 10,
    "delivered_per_s": 29_900.0,
    "offered_per_s": 30_000.0,
    "delay_ms": {"p50": 3.0, "p99": 61.0},
    "every_event_once": True,
    "events_missing": 0,
    "events_duplicated": 0,
}
IDLE = {
    "spec": {"connections": 10_000},
    "authenticated": 10_000,
    "held_open": 10_000,
    "health_check": "200",
    "rss_before_mb": 42.0,
    "rss_held_mb": 81.5,
    "rss_after_mb": 74.0,
}
PENDING = {
    "spec": {"requests": 100_000},
    "timed_out_on_time": 100_000,
    "timed_out_late": 0,
    "not_504": 0,
    "missing": 0,
    "pending_peak": 99_000,
    "waiters_after": 0.0,
    "rss_before_mb": 43.0,
    "rss_peak_mb": 443.0,
    "rss_after_mb": 420.0,
    "allocated_blocks_before": 250_000.0,
    "allocated_blocks_peak": 3_500_000.0,
    "allocated_blocks_after": 264_000.0,
}  # limit: 250,000 x 1.02 + 10,000 = 265,000


SETTLEMENT = {
    "spec": {"concurrency": 50, "accounts": 100, "duration_s": 15.0},
    "adjustments_per_s": 2_600.0,
    "confirmed_per_s": 2_500.0,
    "p50_ms": 12.0,
    "p99_ms": 40.0,
    "max_ms": 300.0,
    "wallets": 100,
    "mismatches": 0,
    "unresolved_wallets": 0,
    "problems": 0,
    "cpu": {
        "wall_s": 18.0,
        "server_cpu_s": 9.0,
        "generator_cpu_s": 12.0,
        "requests": 45_000,
        "server_cpu_ms_per_request": 0.2,
        "generator_cpu_ms_per_request": 0.27,
    },
    "references": {
        "credit_in_sync_tcp": {"server_cpu_ms_per_request": 0.1},
        "account_query_tcp": {"server_cpu_ms_per_request": 0.05},
        "amount_query_http": {"server_cpu_ms_per_request": 0.15},
    },
    "cpu_compared": {
        "adjustment_over_credit_in_sync": 2.0,
        "http_read_over_tcp_read": 3.0,
        "http_framework_ms_per_request": 0.1,
    },
}  # with the load run's 9,000 ok/s: ratio 0.278
FAULT = {
    "spec": {"concurrency": 10, "duration_s": 10.0, "slack_ms": 100},
    "lock": {"taken": True, "held_from_s": 3.0, "held_s": 4.01},
    "budget_ms": 2500,
    "limit_ms": 2600,
    "slowest_gateway_ms": 2503,
    "slowest_answer_ms": 2640.0,  # the simulator's clock: its own queueing too
    "unanswered": 0,
    "service_unavailable": 10,
    "gateway_past_budget": 12.0,
    "adjustments": 900,
    "cancel_attempts": 12,
    "cancels": {"0": 10},
    "unresolved_adjustments": 0,
    "wallets": 100,
    "mismatches": 0,
}


def history_run(design: str, rps: float, errors: int = 0) -> dict[str, Any]:
    return {"design": design, "load": "CreditInSync 50x4", "rps": rps, "errors": errors}


HISTORY = {
    "spec": {"operations": 2_000_000, "accounts": 1_000},
    "rss_start_mb": 60.0,
    "rss_half_mb": 180.0,
    "rss_end_mb": 195.0,
    "rss_growth_mb": 15.0,
    "restart_s": 1.5,
    "throughput_ratio": 0.95,
    "fill": {"operations": 2_000_000, "acked": 2_000_000, "seconds": 400.0, "ops_per_s": 5000.0},
    "restart": {"stop_s": 0.3, "exit_code": 0, "start_s": 1.5, "loaded": {"records": 50_000}},
    "throughput": {
        "runs": [
            history_run("windowed", 9_500.0),
            history_run("in-memory", 10_000.0),
            history_run("windowed", 9_400.0),
            history_run("in-memory", 9_900.0),
        ],
        "windowed_median_rps": 9_450.0,
        "in_memory_median_rps": 9_950.0,
        "ratio": 0.95,
        "errors": 0,
    },
}


def results(**sections: Any) -> dict[str, Any]:
    runs = {
        "gateway": load_run(9_000.0, 8.0, 20.0),
        "single": load_run(1_500.0, 0.6, 2.5),
        "baseline": load_run(20_000.0, 2.0, 5.0),
    }
    return assemble_results(
        machine={"cpu_model": "test cpu", "git": {"commit": "abc", "dirty": False}},
        settings={"mode": "quick", "connections": 50, "inflight": 4, "accounts": 100},
        runs=sections.pop("runs", runs),
        fanout=sections.get("fanout", FANOUT),
        idle=sections.get("idle", IDLE),
        pending=sections.get("pending", PENDING),
        failures={},
        wall_time_s=170.04,
        cpu={"gateway": {"wall_s": 18.0, "server_cpu_s": 18.0, "generator_cpu_s": 9.0}},
        settlement=sections.get("settlement", SETTLEMENT),
        settlement_fault=sections.get("settlement_fault", FAULT),
        history=sections.get("history", HISTORY),
    )


def verdicts(document: dict[str, Any]) -> dict[str, bool | None]:
    return {target["name"]: target["met"] for target in document["targets"]}


def test_results_carry_the_headline_fields() -> None:
    """gateway_rps, baseline_rps, ratio, p50/p99 and the single-connection figures are top level."""
    document = results()
    assert document["gateway_rps"] == 9_000.0 and document["baseline_rps"] == 20_000.0
    assert document["ratio"] == 0.45
    assert (document["p50_ms"], document["p99_ms"]) == (8.0, 20.0)
    assert (document["single_p50_ms"], document["single_p99_ms"]) == (0.6, 2.5)
    assert document["wall_time_s"] == 170.0
    orjson.dumps(document)  # JSON-ready as it stands


def test_targets_are_judged_from_the_figures() -> None:
    """Each figure is compared with its goal: met, missed, or n/a."""
    met = verdicts(results())
    assert met["CreditInSync 50x4: throughput / baseline"] is True
    assert met["CreditInSync 50x4: p99"] is True
    assert met["CreditInSync 1x1: p50 (durable commits)"] is True
    assert met["fan-out to 10: events delivered / s"] is True
    assert met["fan-out to 10: send-to-receipt p99"] is False  # 61 ms > 50 ms
    assert met["idle: gateway RSS with all held"] is True
    assert met["pending Sync: all 504 within timeout + 100 ms"] is True
    assert met["pending Sync: no waiter left (gateway metrics)"] is True
    assert met["pending Sync: allocated blocks back to the starting level"] is True


def test_missed_targets_and_errors() -> None:
    """Errors, a slow gateway, late timeouts and a leftover waiter are each a miss."""
    runs = {
        "gateway": load_run(5_000.0, 9.0, 40.0, {"504/SYNC_TIMEOUT": 3}),
        "single": load_run(900.0, 1.2, 4.0),
        "baseline": load_run(20_000.0, 2.0, 5.0),
    }
    pending = {
        **PENDING,
        "timed_out_on_time": 99_990,
        "timed_out_late": 10,
        "waiters_after": 2.0,
        "allocated_blocks_after": 266_000.0,
    }
    met = verdicts(results(runs=runs, pending=pending))
    assert met["CreditInSync 50x4: throughput / baseline"] is False  # 0.25
    assert met["CreditInSync 50x4: errors and mismatches"] is False
    assert met["CreditInSync 1x1: p99 (durable commits)"] is False
    assert met["pending Sync: all 504 within timeout + 100 ms"] is False
    assert met["pending Sync: no waiter left (gateway metrics)"] is False
    assert met["pending Sync: allocated blocks back to the starting level"] is False


def test_allocated_blocks_are_judged_against_the_starting_level() -> None:
    """Blocks after the drain may exceed those before the burst by 2% + 10,000; RSS is not
    judged, and without the gateway's metrics the target is n/a."""
    name = "pending Sync: allocated blocks back to the starting level"
    at_limit = {**PENDING, "allocated_blocks_after": 265_000.0, "rss_after_mb": 443.0}
    assert verdicts(results(pending=at_limit))[name] is True
    no_metrics = {
        **PENDING,
        "allocated_blocks_before": None,
        "allocated_blocks_peak": None,
        "allocated_blocks_after": None,
    }
    assert verdicts(results(pending=no_metrics))[name] is None


def test_skipped_phases_are_not_judged() -> None:
    """A phase that did not run leaves its targets n/a and its headline fields None."""
    document = results(
        runs={},
        fanout=None,
        idle=None,
        pending=None,
        settlement=None,
        settlement_fault=None,
        history=None,
    )
    assert document["ratio"] is None and document["gateway_rps"] is None
    assert set(verdicts(document).values()) == {None}
    assert all(target.value is None for target in evaluate_targets(document))


def test_settlement_targets_are_judged_against_the_same_runs_credit_in_sync() -> None:
    """Throughput is confirmed adjustments/s over the load run's ok/s; p99, max and the wallets
    are judged; the fault phase's four targets all pass on a stalled, reconciled run."""
    document = results()
    assert document["settlement"]["ratio_to_credit_in_sync"] == 0.278
    assert document["settlement"]["credit_in_sync_rps"] == 9_000.0
    met = verdicts(document)
    for name in (
        "settlement 50: throughput / CreditInSync 50x4",
        "settlement 50: p99",
        "settlement 50: max (well under the 3 s budget)",
        "settlement 50: wallet mismatches and unresolved",
        "settlement fault: the held lock stalled the gateway",
        "settlement fault: every answer within budget + 100 ms",
        "settlement fault: cancels resolved every refusal",
        "settlement fault: wallet mismatches",
    ):
        assert met[name] is True, name


def test_settlement_misses() -> None:
    """A slow or wrong settlement run misses; a late or missing answer, a lock that stalled
    nothing, an unresolved cancel and a wrong wallet each miss in the fault phase."""
    settlement = {**SETTLEMENT, "confirmed_per_s": 900.0, "p99_ms": 80.0, "max_ms": 1500.0}
    settlement["unresolved_wallets"] = 1
    late = {**FAULT, "slowest_gateway_ms": 2700, "unresolved_adjustments": 2, "mismatches": 1}
    met = verdicts(results(settlement=settlement, settlement_fault=late))
    assert met["settlement 50: throughput / CreditInSync 50x4"] is False  # 0.1
    assert met["settlement 50: p99"] is False
    assert met["settlement 50: max (well under the 3 s budget)"] is False
    assert met["settlement 50: wallet mismatches and unresolved"] is False
    assert met["settlement fault: every answer within budget + 100 ms"] is False
    assert met["settlement fault: cancels resolved every refusal"] is False
    assert met["settlement fault: wallet mismatches"] is False
    unanswered = {**FAULT, "unanswered": 1}
    assert (
        verdicts(results(settlement_fault=unanswered))[
            "settlement fault: every answer within budget + 100 ms"
        ]
        is False
    )
    quiet = {**FAULT, "service_unavailable": 0, "gateway_past_budget": 0.0, "slowest_gateway_ms": 9}
    assert (
        verdicts(results(settlement_fault=quiet))[
            "settlement fault: the held lock stalled the gateway"
        ]
        is False
    )
    never = {**FAULT, "lock": {"taken": False}}
    assert (
        verdicts(results(settlement_fault=never))[
            "settlement fault: the held lock stalled the gateway"
        ]
        is False
    )


def test_a_hold_shorter_than_the_budget_shows_as_a_long_wait() -> None:
    """No SERVICE_UNAVAILABLE when the hold is shorter than the budget: an answer that waited
    most of the hold is the stall's mark."""
    short = {
        **FAULT,
        "lock": {"taken": True, "held_from_s": 1.0, "held_s": 1.0},
        "service_unavailable": 0,
        "gateway_past_budget": 0.0,
        "slowest_gateway_ms": 960,
    }
    assert (
        verdicts(results(settlement_fault=short))[
            "settlement fault: the held lock stalled the gateway"
        ]
        is True
    )


def test_settlement_ratio_needs_the_load_run() -> None:
    """Without the load phase the ratio is n/a; the other settlement targets are still judged."""
    document = results(runs={})
    met = verdicts(document)
    assert document["settlement"]["ratio_to_credit_in_sync"] is None
    assert met["settlement 50: throughput / CreditInSync 50x4"] is None
    assert met["settlement 50: p99"] is True


HISTORY_TARGETS = (
    "history: gateway RSS after 2,000,000 operations",
    "history: RSS growth 1,000,000 -> 2,000,000 operations",
    "history: restart to listening",
    "history: CreditInSync 50x4 windowed / in-memory",
    "history: CreditInSync 50x4 errors and mismatches",
)


def test_history_targets_are_judged() -> None:
    """RSS under 250 MB, growth over the second half under 20 MB, restart under 2 s, the
    windowed gateway's median at least 0.9 of the in-memory design's, no errors."""
    met = verdicts(results())
    assert [met[name] for name in HISTORY_TARGETS] == [True] * 5
    runs = [history_run("windowed", 3_000.0, errors=2), history_run("in-memory", 10_000.0)]
    missed = {
        **HISTORY,
        "rss_end_mb": 250.0,
        "rss_growth_mb": 20.0,
        "restart_s": 2.0,
        "throughput_ratio": 0.3,
        "throughput": {**HISTORY["throughput"], "runs": runs, "errors": 2},
    }
    met = verdicts(results(history=missed))
    assert [met[name] for name in HISTORY_TARGETS] == [False] * 5
    document = results(history=None)
    unjudged = [t for t in document["targets"] if t["name"].startswith("history:")]
    assert len(unjudged) == 5 and {t["met"] for t in unjudged} == {None}


def test_summary_table_lists_every_target_with_its_verdict() -> None:
    """The printed table names each target, its goal, the figure and PASS / MISS / n/a."""
    document = results(idle=None)
    table = summary_table(document)
    assert "test cpu" in table and "ratio 0.45" in table
    assert "gateway server 1.00, generator 0.50" in table
    assert "2,600 adjustments/s" in table and "ratio to CreditInSync 0.278" in table
    assert "adjustment over HTTP 0.2 ms vs CreditInSync over TCP 0.1 ms (x2)" in table
    assert "over HTTP 0.15 ms vs over TCP 0.05 ms (x3: the HTTP path costs 0.1 ms more)" in table
    assert "ledger locked 4.01 s from 3 s: slowest answer 2,503 ms by the gateway's clock" in table
    assert "History: 2,000,000 CreditIn over 1,000 accounts in 400 s (5,000/s)" in table
    assert "gateway RSS 60 -> 180 -> 195 MB; restart 1.5 s" in table
    for target in document["targets"]:
        assert target["name"] in table
    assert "PASS" in table and "MISS" in table and "n/a" in table


def test_skipping_everything_still_writes_results(tmp_path: Path) -> None:
    """With every phase skipped the bench writes results.json and exits 0."""
    code = main(["--out", str(tmp_path), "--skip", ",".join(PHASES), "--no-progress"])
    assert code == 0
    document = orjson.loads((tmp_path / "results.json").read_bytes())
    assert document["runs"] == {} and document["failures"] == {}
    assert document["machine"]["cpu_count_logical"] >= 1


@pytest.mark.slow
def test_a_tiny_whole_run_writes_figures_and_plots(tmp_path: Path) -> None:
    """Every phase at a toy scale: results.json has each section, each run's plots exist."""
    code = main(
        [
            "--out",
            str(tmp_path),
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--connections",
            "2",
            "--inflight",
            "1",
            "--accounts",
            "2",
            "--fanout-listeners",
            "2",
            "--fanout-rate",
            "100",
            "--idle-connections",
            "20",
            "--pending-requests",
            "100",
            "--pending-timeout-ms",
            "300",
            "--settlement-concurrency",
            "2",
            "--fault-hold",
            "0.6",
            "--fault-budget-ms",
            "200",
            "--no-progress",
        ]
    )
    document = orjson.loads((tmp_path / "results.json").read_bytes())
    assert document["failures"] == {} and code == 0
    assert set(document["runs"]) == set(document["cpu"]) == {"gateway", "single", "baseline"}
    assert document["gateway_rps"] > 0 and document["baseline_rps"] > 0
    assert document["fanout"]["every_event_once"]
    assert document["idle"]["authenticated"] == 20
    assert document["pending"]["answers"] == {"504/SYNC_TIMEOUT": 100}
    assert document["pending"]["gateway_logged_timeouts"]["expired_requests"] == 100
    assert document["pending"]["ledger_records_after"] == 2
    assert document["settings"]["ledger_synchronous"] == "FULL"
    settlement, fault = document["settlement"], document["settlement_fault"]
    assert settlement["adjustments"] > 0 and settlement["mismatches"] == 0
    assert settlement["ratio_to_credit_in_sync"] is not None
    assert settlement["references"]["amount_query_http"]["rps"] > 0
    assert fault["lock"]["taken"] and fault["service_unavailable"] > 0
    assert fault["unresolved_adjustments"] == fault["mismatches"] == 0
    judged = {t["name"]: t["met"] for t in document["targets"] if "settlement" in t["name"]}
    assert len(judged) == 8 and None not in judged.values()
    for name in (
        "gateway-timeline.png",
        "single-latency.png",
        "baseline-timeline.png",
        "comparison-throughput.png",
        "fanout-delay.png",
        "pending-memory.png",
        "settlement-timeline.png",
        "settlement-latency.png",
        "settlement-fault-timeline.png",
        "settlement-fault-latency.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "gateway.log").stat().st_size > 0
