"""The conformance kit: every case passes against the correct wallet, and each classic bug
fails exactly the cases that should catch it."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway_bench.settlement.kit import CASE_NAMES, KitOptions, KitReport, main, run_kit

from .conftest import KIT_LOGIN
from .wallet_server import WalletServer, serving, serving_in_thread
from .wallets import ADJUST, CANCEL, TRANSFER, Account, Faults, Wallet

IRREVERSIBLE = ["abnormal_overtrading", "overtrading_beyond_wallet", "transfer_resent"]


async def kit_against(wallet: Wallet, **options: Any) -> KitReport:
    async with serving(wallet) as server:
        return await run_kit(KitOptions(url=server.url, login=KIT_LOGIN, currency="USD", **options))


async def test_the_reference_wallet_passes_every_case(reference: WalletServer) -> None:
    """All section-10 cases pass against a wallet that follows the contract, and the wallet ends
    at its start plus the net of the irreversible cases, which are listed."""
    report = await run_kit(KitOptions(url=reference.url, login=KIT_LOGIN, currency="USD"))
    assert report.setup_error is None
    assert [r.name for r in report.results] == list(CASE_NAMES)
    assert [r.line() for r in report.results if not r.passed] == []
    assert report.passed
    assert [name for name, _ in report.irreversible] == IRREVERSIBLE
    nets = dict(report.irreversible)
    assert nets == {
        "abnormal_overtrading": Decimal("-1.23"),
        "overtrading_beyond_wallet": Decimal("-1.23"),
        "transfer_resent": Decimal("1.23"),
    }
    assert report.start is not None and report.end is not None
    assert report.end - report.start == sum(n for n in nets.values() if n is not None)
    assert reference.wallet.accounts[KIT_LOGIN].amount == report.end


async def test_request_numbers_are_unique_per_run_and_short(reference: WalletServer) -> None:
    """A second run on the same wallet passes too (no number reused), every number fits in 48
    characters and every request carried its own trace."""
    for _ in range(2):
        report = await run_kit(KitOptions(url=reference.url, login=KIT_LOGIN, currency="USD"))
        assert report.passed, report.failed_cases
    wallet = reference.wallet
    numbers = [*wallet.journal, *wallet.cancels, *wallet.transfers]
    assert numbers and max(len(number) for number in numbers) <= 48
    traces = [headers["trace"] for _, headers in wallet.seen if "trace" in headers]
    assert len(traces) == len(set(traces))


# fault -> (cases it must fail, cases it may also fail: a race can go either way,
#           what the reason of a failed case says)
FAULTS: dict[str, tuple[set[str], set[str], dict[str, str]]] = {
    "duplicates_applied": (
        {"duplicate_adjustment", "duplicate_mismatch", "concurrent_duplicates", "final_balance"},
        set(),
        {
            "duplicate_adjustment": "the wallet moved -2.46, the answers imply -1.23",
            "duplicate_mismatch": "expected DUPLICATE_REQUEST_MISMATCH, got 0",
        },
    ),
    # cancel-first rounds of the race catch it too, but which order wins is up to the network
    "tombstones_ignored": (
        {"cancel_unknown_then_late_adjustment"},
        {"cancel_races_adjustment"},
        {"cancel_unknown_then_late_adjustment": "expected REQUEST_CANCELLED, got 0"},
    ),
    "refused_as_unknown": (
        {"cancel_refused"},
        set(),
        {"cancel_refused": "expected US_0000001, got US_0000002"},
    ),
    "double_reversal": (
        {"cancel_applied", "final_balance"},
        set(),
        {"cancel_applied": "after the same cancel again: the wallet moved +1.23"},
    ),
    "wrong_decimals": (
        {"balance_format"},
        set(),
        {"balance_format": "amount '1000.0' is not a string with exactly 2 decimals"},
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_each_bug_fails_exactly_its_cases(fault: str) -> None:
    """A wallet with one classic bug fails the cases made for it and passes all the others."""
    required, allowed, says = FAULTS[fault]
    report = await kit_against(Wallet(faults=Faults(**{fault: True})))
    failed = set(report.failed_cases)
    assert required <= failed <= required | allowed, [
        r.line() for r in report.results if not r.passed
    ]
    assert not report.passed
    reasons = {r.name: r.reason for r in report.results}
    for name, snippet in says.items():
        assert snippet in reasons[name]


@pytest.mark.parametrize(
    ("settings", "policy"),
    [
        ({"overtrading": "deduct"}, "deduct (all or nothing)"),
        ({"overtrading": "ignore"}, "ignore"),
        ({"overtrading": "deduct", "seed_style_data": True}, "deduct (all or nothing)"),
    ],
    ids=["deduct", "ignore", "seed-style-data"],
)
async def test_every_contract_choice_passes(settings: dict[str, Any], policy: str) -> None:
    """Other overtrading policies and the seed's empty data pass every case, and the
    beyond-the-wallet case names the policy it saw."""
    report = await kit_against(Wallet(**settings))
    assert report.passed, [r.line() for r in report.results if not r.passed]
    reason = {r.name: r.reason for r in report.results}["overtrading_beyond_wallet"]
    assert reason.startswith(policy + ":"), reason


async def test_http_400_for_a_missing_trace_passes() -> None:
    """A wallet that refuses a request without trace at the HTTP level passes that case."""
    only = {"missing_headers", "final_balance"}
    report = await kit_against(Wallet(missing_trace_status=400), skip=frozenset(CASE_NAMES) - only)
    assert report.passed and {r.name for r in report.results} == only
    assert "no trace: http/400" in report.results[0].reason


async def test_a_success_without_data_amount_beyond_the_wallet_fails() -> None:
    """deduct_available answering {} claims more than the wallet held: that case fails, and
    the amount it parked first still comes back."""
    wallet = Wallet(seed_style_data=True)
    report = await kit_against(wallet)
    reasons = {r.name: r.reason for r in report.results}
    assert "without data.amount" in reasons["overtrading_beyond_wallet"]
    assert report.start is not None
    assert wallet.accounts[KIT_LOGIN].amount > report.start / 2


async def test_skipped_cases_are_not_run(reference: WalletServer) -> None:
    """--skip leaves cases out; the final balance still adds up."""
    skip = frozenset(CASE_NAMES) - {"open_position", "cancel_applied", "final_balance"}
    report = await run_kit(
        KitOptions(url=reference.url, login=KIT_LOGIN, currency="USD", skip=skip)
    )
    assert report.passed and [r.name for r in report.results] == [
        "open_position",
        "cancel_applied",
        "final_balance",
    ]
    assert report.end == report.start
    assert not any(path == "/api" + TRANSFER for path, _ in reference.wallet.seen)


async def test_the_bearer_token_is_sent() -> None:
    """With --token the kit passes a token-guarded wallet; without it cannot even start."""
    only = frozenset(CASE_NAMES) - {"balance_format", "open_position", "final_balance"}
    assert (await kit_against(Wallet(token="t0k"), token="t0k", skip=only)).passed
    report = await kit_against(Wallet(token="t0k"))
    assert report.setup_error is not None and "FORBIDDEN" in report.setup_error
    assert not report.passed and report.results == []


async def test_an_underfunded_wallet_is_refused_before_any_case() -> None:
    """A wallet holding less than ten kit amounts stops the run before any money moves."""
    wallet = Wallet(accounts={KIT_LOGIN: Account(amount=Decimal("5.00"))})
    report = await kit_against(wallet)
    assert report.setup_error is not None and "fund it" in report.setup_error
    assert not any(path in (ADJUST, CANCEL) for path, _ in wallet.seen)


def test_main_prints_a_line_per_case_and_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The command line prints PASS per case, the irreversible list, writes JSON, exits 0."""
    with serving_in_thread(Wallet()) as url:
        argv = ["--url", url, "--login", str(KIT_LOGIN), "--currency", "USD"]
        code = main([*argv, "--json", str(tmp_path / "kit.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert len(re.findall(r"^PASS  \w+ +\S", out, re.MULTILINE)) == len(CASE_NAMES)
    assert "not undone (by design): abnormal_overtrading -1.23" in out
    saved = orjson.loads((tmp_path / "kit.json").read_bytes())
    assert saved["passed"] and len(saved["cases"]) == len(CASE_NAMES)


def test_main_exits_1_on_a_failed_case(capsys: pytest.CaptureFixture[str]) -> None:
    """A failing case prints FAIL with its reason and the exit code is 1."""
    with serving_in_thread(Wallet(faults=Faults(refused_as_unknown=True))) as url:
        code = main(["--url", url, "--login", str(KIT_LOGIN), "--currency", "USD"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^FAIL  cancel_refused +its cancel: expected US_0000001", out, re.M)
    assert "1 failed (cancel_refused)" in out


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown case name in --skip or a missing --login is a usage error."""
    base = ["--url", "http://127.0.0.1:1/api", "--currency", "USD"]
    for argv in ([*base, "--login", "1", "--skip", "no_such_case"], base):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
    assert "unknown case(s) no_such_case" in capsys.readouterr().err


def test_help_lists_the_cases(capsys: pytest.CaptureFixture[str]) -> None:
    """--help names every case in run order."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert ", ".join(CASE_NAMES) in " ".join(capsys.readouterr().out.split())
