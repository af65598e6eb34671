"""The bench's settlement phases at a small scale against an in-process gateway.

They check each phase's bookkeeping (figures present, every wallet reconciled, the fault really
stalling the gateway and every refusal cancelled), never how fast anything was.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from gateway_bench.sessions import ScenarioError
from gateway_bench.settlement_phase import (
    FaultSpec,
    SettlementSpec,
    prepare_wallets,
    run_settlement,
    run_settlement_fault,
    settlement_url,
)
from manager_gateway.ledger.verify import verify_ledger

from ..conftest import GatewayFactory, Harness, unused_port
from ..platform import base_url, settlement_gateway

FINAL_CANCEL_CODES = {"0", "US_0000001", "US_0000002"}


def own_cpu() -> float:
    """This process's CPU seconds: gateway and simulator share it in these tests."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def funded(make_gateway: GatewayFactory, logins: range, **settings: object) -> Harness:
    h = await settlement_gateway(make_gateway, **settings)
    await prepare_wallets("127.0.0.1", h.port, h.token(), logins, 1_000_000.0, "test")
    return h


@pytest.mark.slow
async def test_settlement_phase_reports_figures_and_reconciles_every_wallet(
    make_gateway: GatewayFactory,
) -> None:
    """The reference runs and the simulation all run; every wallet matches, and the CPU per
    request counts each HTTP request (adjustments, cancels, two wallet readings each)."""
    spec = SettlementSpec(accounts=3, concurrency=4, duration_s=0.5, warmup_s=0.2, reference_s=0.3)
    h = await funded(make_gateway, spec.logins)
    result, simulation = await run_settlement(
        base_url(h), ("127.0.0.1", h.port, h.token()), spec, own_cpu, own_cpu
    )
    assert result["adjustments"] > 0 and result["adjustments_per_s"] > 0
    assert set(result["outcomes"]) == {"0"}  # funded wallets: nothing refused
    assert result["wallets"] == 3
    assert result["mismatches"] == result["unresolved_wallets"] == result["problems"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    cpu = result["cpu"]
    sent = simulation.measured.sent + simulation.warmup.sent
    assert cpu["requests"] == sent + 2 * 3  # no cancels: every adjustment was confirmed
    assert cpu["server_cpu_ms_per_request"] > 0 and cpu["generator_cpu_ms_per_request"] > 0
    references = result["references"]
    assert set(references) == {"credit_in_sync_tcp", "account_query_tcp", "amount_query_http"}
    for reference in references.values():
        assert reference["in_flight"] == 4 and reference["rps"] > 0, reference
        assert reference["errors"] == {} and reference["server_cpu_ms_per_request"] > 0
    assert None not in result["cpu_compared"].values()
    assert result["simulation"]["histogram_hdr"]
    assert verify_ledger(h.data_dir)[0] == []


@pytest.mark.slow
async def test_fault_phase_stalls_the_gateway_and_every_refusal_is_cancelled(
    make_gateway: GatewayFactory,
) -> None:
    """With the ledger locked past the answer budget, adjustments are answered
    SERVICE_UNAVAILABLE; the simulator's cancels settle each one, and every wallet still
    holds what its confirmed adjustments imply."""
    metrics_port = unused_port()
    spec = FaultSpec(
        accounts=3,
        concurrency=4,
        duration_s=1.6,
        hold_s=0.8,
        answer_budget_ms=300,
        metrics_port=metrics_port,
    )
    h = await funded(
        make_gateway,
        spec.logins,
        settlement_answer_budget_ms=spec.answer_budget_ms,
        ledger_busy_timeout_ms=spec.ledger_busy_timeout_ms,
        metrics_port=metrics_port,
    )
    result, _ = await run_settlement_fault(base_url(h), "127.0.0.1", h.data_dir / "ledger.db", spec)
    assert result["lock"]["taken"] and result["lock"]["held_s"] >= spec.hold_s
    assert result["service_unavailable"] > 0
    assert result["gateway_past_budget"] >= result["service_unavailable"]
    # Someone waited the budget out, by the gateway's clock and by the simulator's.
    assert result["slowest_answer_ms"] >= result["slowest_gateway_ms"] >= spec.answer_budget_ms
    assert result["unanswered"] == 0
    assert set(result["cancels"]) <= FINAL_CANCEL_CODES
    assert sum(result["cancels"].values()) == result["service_unavailable"]
    assert result["unresolved_adjustments"] == result["unresolved_wallets"] == 0
    assert result["mismatches"] == 0 and result["wallets"] == 3
    assert result["limit_ms"] == spec.answer_budget_ms + spec.slack_ms
    assert verify_ledger(h.data_dir)[0] == []


def test_the_fault_spec_refuses_a_hold_the_run_cannot_contain() -> None:
    """The hold must fit inside the run and the gateway's busy timeout must outlast it."""
    with pytest.raises(ValueError, match="hold"):
        FaultSpec(duration_s=4.0, hold_s=4.0).validate()
    with pytest.raises(ValueError, match="outlast"):
        FaultSpec(hold_s=4.0, ledger_busy_timeout_ms=3000).validate()
    assert FaultSpec(duration_s=10.0, hold_s=4.0).lock_at_s == 3.0


def test_settlement_url_comes_from_the_last_start_line(tmp_path: Path) -> None:
    """The log is appended to by every start: the last settlement line is this gateway's; none
    at all means the listener is off."""
    log = tmp_path / "gateway.log"
    log.write_bytes(
        b"manager-gateway settlement listening on 127.0.0.1:1111\n"
        b"manager-gateway listening on 127.0.0.1:2000\n"
        b"manager-gateway settlement listening on 127.0.0.1:2222\n"
    )
    assert settlement_url(log) == "http://127.0.0.1:2222/api"
    log.write_bytes(b"manager-gateway listening on 127.0.0.1:2000\n")
    with pytest.raises(ScenarioError, match="settlement listener"):
        settlement_url(log)
