"""The platform simulator: it reconciles every wallet with its confirmed adjustments, finds
the wallets a buggy system got wrong, and reports latency, outcomes and cancels."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from matplotlib.image import imread

from gateway_bench.settlement.simspec import (
    AdjustmentSource,
    SimulationSpec,
    close_factor,
    parse_logins,
    parse_mix,
)
from gateway_bench.settlement.simulate import (
    SimulationResult,
    build_parser,
    main,
    run_simulation,
    spec_from_args,
    write_outputs,
)

from .conftest import SIM_LOGINS, sim_wallet
from .wallet_server import serving, serving_in_thread
from .wallets import Faults, Wallet


def spec(url: str, **changes: Any) -> SimulationSpec:
    settings: dict[str, Any] = {
        "url": url,
        "currency": "USD",
        "logins": SIM_LOGINS,
        "concurrency": 8,
        "duration_s": None,
        "requests": 60,
        "cancel_backoff_s": 0.01,
        "seed": 7,
        "progress": False,
    }
    return SimulationSpec(**{**settings, **changes})


async def simulate(wallet: Wallet, **changes: Any) -> SimulationResult:
    async with serving(wallet) as server:
        return await run_simulation(spec(server.url, **changes))


async def test_a_correct_wallet_reconciles() -> None:
    """Against the reference wallet every wallet matches and nothing needs a cancel."""
    wallet = sim_wallet()
    result = await simulate(wallet)
    assert result.measured.sent == 60 and result.measured.outcomes == Counter({"0": 60})
    assert (result.mismatches, result.unresolved, result.failed) == ([], [], False)
    assert not result.measured.cancels and result.histogram.count == 60
    assert {w.login: w.actual for w in result.wallets} == {
        login: account.amount for login, account in wallet.accounts.items()
    }
    assert any(w.expected != w.start for w in result.wallets)


async def test_applied_but_answered_failure_is_restored_by_the_cancel() -> None:
    """SERVICE_UNAVAILABLE after applying is legal: the cancel reverses it, no mismatch."""
    result = await simulate(sim_wallet(faults=Faults(unavailable_every=5)))
    assert result.measured.outcomes["SERVICE_UNAVAILABLE"] == 12
    assert result.measured.cancels == Counter({"0": 12})
    assert not result.failed


async def test_dropped_reversals_are_mismatches() -> None:
    """A wallet that answers 0 to a cancel without giving the money back is caught."""
    faults = Faults(unavailable_every=5, drop_reversal_every=3)
    result = await simulate(sim_wallet(faults=faults))
    assert result.measured.cancels == Counter({"0": 12})
    assert result.mismatches and result.failed
    first = result.mismatches[0].to_dict()
    assert set(first) >= {"login", "expected", "actual", "difference"}


async def test_timeouts_are_cancelled_and_reconcile() -> None:
    """Answers later than the client timeout count as timeouts, their cancels restore money."""
    faults = Faults(slow_every=10, slow_s=0.8)
    result = await simulate(sim_wallet(faults=faults), timeout_s=0.3)
    timeouts = result.measured.timeouts
    assert timeouts >= 6  # the slow ones; a loaded machine may add an ordinary one
    assert result.measured.cancels == Counter({"0": timeouts})
    assert result.histogram.count == 60 - timeouts and not result.failed


async def test_cancels_without_a_final_answer_leave_wallets_unresolved() -> None:
    """A cancel retried to exhaustion is counted and its wallet reported as unresolved."""
    wallet = sim_wallet(amount="0.00", faults=Faults(cancels_unavailable=True))
    result = await simulate(wallet, requests=16, cancel_attempts=3)
    failures = result.measured.sent - result.measured.confirmed
    assert failures > 0 and result.measured.cancels == Counter({"unresolved": failures})
    assert result.measured.cancel_attempts == 3 * failures
    assert result.unresolved and result.failed and not result.mismatches


async def test_overtrading_that_moves_less_than_asked_reconciles() -> None:
    """With deduct_available on small wallets, data.amount (moved) is what counts."""
    wallet = sim_wallet(amount="3.00")
    mix = {"OPEN_POSITION": 1.0, "NORMAL_CLOSE": 1.0, "ABNORMAL_OVERTRADING": 2.0}
    result = await simulate(wallet, mix=mix, amount_min=Decimal(1), amount_max=Decimal(9))
    short = [
        entry
        for entry in wallet.journal.values()
        if entry.fingerprint is not None
        and dict(entry.fingerprint)["operationType"] == "ABNORMAL_OVERTRADING"
        and entry.moved != dict(entry.fingerprint)["amount"]
    ]
    assert short, "no overtrading moved less than asked: the case was not exercised"
    assert not result.failed


async def test_the_seeds_empty_data_falls_back_to_the_requested_amount() -> None:
    """A wallet answering data {} reconciles on the requested amounts (deduct policy)."""
    wallet = sim_wallet(amount="50.00", seed_style_data=True, overtrading="deduct")
    result = await simulate(wallet)
    assert result.measured.outcomes["INSUFFICIENT_FUNDS"] > 0
    assert set(result.measured.cancels) == {"US_0000001"}
    assert not result.failed


async def test_open_loop_sends_at_the_rate() -> None:
    """--rate sends on a schedule for the duration; the wallets still reconcile."""
    result = await simulate(sim_wallet(), rate=100.0, duration_s=0.5, requests=None)
    assert 40 <= result.measured.sent <= 55
    assert not result.failed and result.measured.answered == result.measured.sent


async def test_warmup_traffic_is_not_measured_but_is_reconciled() -> None:
    """Warm-up adjustments stay out of the figures, not out of the wallet comparison."""
    result = await simulate(sim_wallet(), warmup_s=0.2, requests=40)
    assert result.warmup.sent > 0 and result.measured.sent == 40
    assert result.histogram.count == 40 and not result.failed


def test_the_request_source_is_reproducible_and_exact() -> None:
    """Same seed, same adjustments; amounts at the currency's digits, numbers <= 48 chars."""
    run = SimulationSpec(logins=range(1, 4), amount_min=Decimal("0.5"), amount_max=Decimal(2))
    source_a = AdjustmentSource(run, dict.fromkeys(run.logins, 2))
    source_b = AdjustmentSource(run, dict.fromkeys(run.logins, 2))
    a = [source_a.next() for _ in range(300)]
    b = [source_b.next() for _ in range(300)]
    assert [(x.operation, x.amount, x.login) for x in a] == [
        (x.operation, x.amount, x.login) for x in b
    ]
    assert all(len(x.number) <= 48 and -x.amount.as_tuple().exponent == 2 for x in a)
    ops = Counter(x.operation for x in a)
    assert ops["OPEN_POSITION"] > ops["NORMAL_CLOSE"] > ops["ABNORMAL_OVERTRADING"] > 0
    assert all(x.amount < 0 for x in a if x.operation == "ABNORMAL_OVERTRADING")
    assert close_factor(run.mix) == 3


def test_parsers_and_validation() -> None:
    """Login ranges, mixes and bad settings are read or refused with a clear message."""
    assert parse_logins("10-12") == range(10, 13) and parse_logins("5") == range(5, 6)
    assert parse_mix("open_position=3,NORMAL_CLOSE") == {"OPEN_POSITION": 3.0, "NORMAL_CLOSE": 1.0}
    for text in ("12-10", "a-b"):
        with pytest.raises(ValueError):
            parse_logins(text)
    with pytest.raises(ValueError, match="unknown operation type"):
        parse_mix("CLOSE_ALL=1")
    with pytest.raises(ValueError, match="duration or a number"):
        SimulationSpec(duration_s=None).validate()


async def test_results_are_written_as_json_and_pngs(tmp_path: Path) -> None:
    """The JSON carries the figures with exact amounts as strings; both PNGs decode."""
    result = await simulate(sim_wallet(faults=Faults(unavailable_every=4, drop_reversal_every=2)))
    written = write_outputs(result, tmp_path)
    assert [path.name for path in written] == [
        "simulate.json",
        "simulate-timeline.png",
        "simulate-latency.png",
    ]
    saved = orjson.loads(written[0].read_bytes())
    assert saved["failed"] and saved["mismatches"] and saved["cancels"] == {"0": 15}
    assert isinstance(saved["mismatches"][0]["expected"], str)
    assert set(saved["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    for path in written[1:]:
        height, width, _ = imread(path).shape
        assert width >= 600 and height >= 400


def test_arguments_build_the_spec() -> None:
    """Every option lands in its SimulationSpec field."""
    args = build_parser().parse_args(
        [
            "--url",
            "http://h:1/api",
            "--currency",
            "EUR",
            "--logins",
            "100-109",
            "--rate",
            "50",
            "--connections",
            "4",
            "--requests",
            "10",
            "--mix",
            "OPEN_POSITION=1",
            "--amount-max",
            "2.5",
            "--timeout",
            "1.5",
            "--cancel-attempts",
            "2",
            "--seed",
            "3",
            "--no-progress",
        ]
    )
    built = spec_from_args(args)
    assert (built.url, built.currency, built.logins, built.rate) == (
        "http://h:1/api",
        "EUR",
        range(100, 110),
        50.0,
    )
    assert (built.concurrency, built.requests, built.mix) == (4, 10, {"OPEN_POSITION": 1.0})
    assert (built.amount_max, built.timeout_s, built.cancel_attempts, built.seed) == (
        Decimal("2.5"),
        1.5,
        2,
        3,
    )
    assert not built.progress
    built.validate()


def test_main_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """0 when every wallet reconciles, 1 when one does not, 2 on bad arguments."""
    common = ["--currency", "USD", "--logins", "7001-7008", "--requests", "40", "--no-progress"]
    with serving_in_thread(sim_wallet()) as url:
        assert main(["--url", url, *common, "--out", str(tmp_path)]) == 0
    assert "wallets: 8 match, 0 mismatch" in capsys.readouterr().out
    assert (tmp_path / "simulate.json").exists()
    faulty = sim_wallet(faults=Faults(unavailable_every=2, drop_reversal_every=1))
    with serving_in_thread(faulty) as url:
        assert main(["--url", url, *common, "--cancel-backoff", "0"]) == 1
    assert "mismatch" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["--url", "http://x/api", *common, "--connections", "3"])
    assert stop.value.code == 2
