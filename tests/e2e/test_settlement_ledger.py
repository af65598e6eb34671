"""`ledger verify` against the settlement journal, and `settlement report`, as real processes.

A real gateway writes a small, known settlement history over HTTP (adjustments, a cancel, a
transfer, a refusal, a tombstone) and is stopped; then the ledger file is corrupted in exactly one
way with sqlite3 and `manager-gateway ledger verify` must name that corruption, or the journal is
exported with `manager-gateway settlement report`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.verify import verify_ledger
from manager_gateway.settlement.report import FIELDS

from ..conftest import GatewayFactory
from ..platform import Platform, adjustment, base_url, cancellation, fund, settlement_gateway
from ..platform import transfer as transfer_body
from ..test_cli import cli, tamper

LOGIN = 1001
OTHER = 1002
FAR_FUTURE = "2100-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class Run:
    """The known history in `data_dir`; `middle` is a wall-clock time (unix s) after the first
    two adjustments were answered and before anything else was sent."""

    data_dir: Path
    started: float
    middle: float
    finished: float


async def write_history(make_gateway: GatewayFactory, data_dir: Path) -> Run:
    """Accounts 1001 and 1002 with 1000.00 of credit each (orders 1 and 2), then over HTTP:
    open-1 (order 3, stays), open-2 (order 4) reversed by cancel-2, close-3 (order 5), the
    transfer tx-4 (order 6), refused-5 (INSUFFICIENT_FUNDS) and its cancel cancel-7
    (US_0000001), and cancel-6 of a number never sent (a tombstone for ghost-6)."""
    h = await settlement_gateway(make_gateway, data_dir=data_dir)
    tcp = await h.client()
    await fund(tcp, h, LOGIN, OTHER)
    started = time.time()
    async with aiohttp.ClientSession() as http:
        platform = Platform(base_url(h), http)

        async def ok(answer: dict[str, Any], code: str = "0") -> dict[str, Any]:
            assert answer["code"] == code, answer
            return answer

        await ok(await platform.adjust(adjustment(LOGIN, "12.50", requestUniqueNo="open-1")))
        await ok(await platform.adjust(adjustment(LOGIN, "7.25", requestUniqueNo="open-2")))
        middle = time.time()
        undo = cancellation(LOGIN, "open-2", "7.25", requestUniqueNo="cancel-2")
        await ok(await platform.cancel(undo))
        await ok(
            await platform.adjust(
                adjustment(OTHER, "30", "NORMAL_CLOSE", requestUniqueNo="close-3")
            )
        )
        await ok(await platform.transfer(transfer_body(OTHER, "25.10", txid="tx-4")))
        refused = adjustment(LOGIN, "5000", requestUniqueNo="refused-5")
        await ok(await platform.adjust(refused), "INSUFFICIENT_FUNDS")
        ghost = cancellation(LOGIN, "ghost-6", "3", requestUniqueNo="cancel-6")
        await ok(await platform.cancel(ghost), "US_0000002")
        undo = cancellation(LOGIN, "refused-5", "5000", requestUniqueNo="cancel-7")
        await ok(await platform.cancel(undo), "US_0000001")
        assert await platform.wallet(LOGIN) == "987.50"
        assert await platform.wallet(OTHER) == "1055.10"
    finished = time.time()
    await h.close_clients()
    await h.gateway.shutdown()
    return Run(data_dir, started, middle, finished)


def verify(run: Run) -> tuple[int, list[str], str]:
    """`ledger verify` on the run's data dir: (exit status, its MISMATCH lines, all output)."""
    done = cli("ledger", "verify", "--data-dir", run.data_dir, cwd=run.data_dir.parent)
    output = done.stdout + done.stderr
    mismatches = [line for line in done.stdout.splitlines() if line.startswith("MISMATCH")]
    return done.returncode, mismatches, output


ADJUSTMENT = "MISMATCH settlement adjustment 'open-1' of company 1"
CANCEL = "MISMATCH settlement cancel 'cancel-2' of company 1"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "DELETE FROM records WHERE ord = 3",
            [
                "MISMATCH account 1001: credit 987.50, records sum to 1000.00",
                f"{ADJUSTMENT}: finance order 3 is missing",
            ],
            id="record-deleted",
        ),
        pytest.param(
            "DELETE FROM records WHERE ord IN (3, 6)",
            [
                "MISMATCH account 1001: credit 987.50, records sum to 1000.00",
                "MISMATCH account 1002: credit 1055.10, records sum to 1030.00",
                f"{ADJUSTMENT}: finance order 3 is missing",
                "MISMATCH settlement transfer 'tx-4' of company 1: finance order 6 is missing",
            ],
            id="two-records-deleted",
        ),
        pytest.param(
            "UPDATE settlement_journal SET amount = '-1.25' WHERE number = 'open-1'",
            [f"{ADJUSTMENT}: moved -1.25, but order 3 was made with -12.50"],
            id="adjustment-amount-changed",
        ),
        pytest.param(
            "UPDATE settlement_journal SET amount = '52.10' WHERE number = 'tx-4'",
            [
                "MISMATCH settlement transfer 'tx-4' of company 1:"
                " moved 52.10, but order 6 was made with 25.10"
            ],
            id="transfer-amount-changed",
        ),
        pytest.param(
            "UPDATE settlement_journal SET cancelled_by = 'cancel-9' WHERE number = 'open-1'",
            [f"{ADJUSTMENT}: cancelled by 'cancel-9', order 3 not deleted"],
            id="cancelled-not-deleted",
        ),
        pytest.param(
            "UPDATE settlement_journal SET cancelled_by = NULL WHERE number = 'open-2'",
            [f"{CANCEL}: reversed 'open-2', which is not marked cancelled"],
            id="target-not-marked-cancelled",
        ),
        pytest.param(
            "UPDATE settlement_journal SET finance_order = 3 WHERE number = 'cancel-2'",
            [f"{CANCEL}: reversed order 3, which is not deleted"],
            id="reversal-not-deleted",
        ),
        pytest.param(
            "UPDATE settlement_journal SET finance_order = NULL WHERE number = 'open-1'",
            [f"{ADJUSTMENT}: moved -12.50 with no finance record"],
            id="moved-without-record",
        ),
        pytest.param(
            "UPDATE settlement_journal SET login = 1002 WHERE number = 'open-1'",
            [f"{ADJUSTMENT}: finance order 3 belongs to login 1001"],
            id="record-of-another-login",
        ),
    ],
)
async def test_ledger_verify_names_each_journal_inconsistency(
    tmp_path: Path, make_gateway: GatewayFactory, sql: str, expected: list[str]
) -> None:
    """The ledger the gateway wrote, corrupted in one way: `ledger verify` exits 1 with exactly
    the MISMATCH lines that name the corruption."""
    run = await write_history(make_gateway, tmp_path / "data")
    assert verify_ledger(run.data_dir)[0] == []  # consistent before (the CLI: the test below)
    tamper(run.data_dir, sql)
    status, mismatches, output = verify(run)
    assert status == 1, output
    assert mismatches == expected, output
    assert f"ledger inconsistent: {len(expected)} problem(s)" in output
    # The same check in this process too, where a changed line of verify.py is seen (a mutation
    # test cannot see into the command's process).
    problems, summary = verify_ledger(run.data_dir)
    assert [f"MISMATCH {problem}" for problem in problems] == expected
    assert summary.endswith("settlement_journal=9"), summary


async def test_ledger_verify_passes_on_the_untouched_ledger(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    """The same history untouched: `ledger verify` exits 0, having checked the 9 journal rows."""
    run = await write_history(make_gateway, tmp_path / "data")
    status, mismatches, output = verify(run)
    assert (status, mismatches) == (0, []), output
    assert "orders=6 " in output and "settlement_journal=9" in output
    assert "ledger consistent" in output


# -- settlement report ---------------------------------------------------------------------

#: The run's journal as the report shows it: number -> (space, kind, code, login, order, amount,
#: reverses, cancelled_by).
KNOWN_ROWS: dict[str, tuple[Any, ...]] = {
    "open-1": ("request", "adjustment", "0", LOGIN, 3, "-12.50", None, None),
    "open-2": ("request", "adjustment", "0", LOGIN, 4, "-7.25", None, "cancel-2"),
    "cancel-2": ("request", "cancel", "0", LOGIN, 4, "7.25", "open-2", None),
    "close-3": ("request", "adjustment", "0", OTHER, 5, "30.00", None, None),
    "tx-4": ("txid", "transfer", "0", OTHER, 6, "25.10", None, None),
    "refused-5": ("request", "adjustment", "INSUFFICIENT_FUNDS", LOGIN, None, "0", None, None),
    "ghost-6": ("request", "tombstone", "US_0000002", None, None, "0", None, "cancel-6"),
    "cancel-6": ("request", "cancel", "US_0000002", None, None, "0", "ghost-6", None),
    "cancel-7": ("request", "cancel", "US_0000001", None, None, "0", "refused-5", None),
}
FIRST_HALF = {"open-1", "open-2"}


def report(run: Run, *args: str) -> list[dict[str, Any]]:
    """`settlement report --format json` (plus `args`) on the run: its rows, checked to come in
    time order and to be counted on stderr."""
    done = cli(
        "settlement", "report", "--data-dir", run.data_dir, "--format", "json", *args,
        cwd=run.data_dir.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = orjson.loads(done.stdout)
    assert f"{len(rows)} journal row(s)" in done.stderr
    assert [row["time"] for row in rows] == sorted(row["time"] for row in rows)
    return rows


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def summary(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["space"], row["kind"], row["code"], row["login"], row["finance_order"],
        row["amount"], row["reverses"], row["cancelled_by"],
    )  # fmt: skip


async def test_report_lists_the_run(tmp_path: Path, make_gateway: GatewayFactory) -> None:
    """JSON and CSV both list every journal row of the run with its kind, code, amount, order
    and links, each at a time within the run; every answer's sentence is there (a tombstone was
    never an answer)."""
    run = await write_history(make_gateway, tmp_path / "data")
    rows = report(run)
    assert {row["number"]: summary(row) for row in rows} == KNOWN_ROWS
    assert len(rows) == len(KNOWN_ROWS)
    assert {row["company"] for row in rows} == {1}
    assert all(bool(row["msg"]) is (row["kind"] != "tombstone") for row in rows)
    assert all(iso(run.started)[:19] <= row["time"][:19] <= iso(run.finished)[:19] for row in rows)

    done = cli(
        "settlement", "report", "--data-dir", run.data_dir, "--format", "csv",
        cwd=run.data_dir.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ",".join(FIELDS)
    as_text = [
        {name: "" if row[name] is None else str(row[name]) for name in FIELDS} for row in rows
    ]
    assert list(csv.DictReader(io.StringIO(done.stdout))) == as_text


async def test_report_filters_by_time(tmp_path: Path, make_gateway: GatewayFactory) -> None:
    """--since is inclusive and --until exclusive, in UTC unless the time says otherwise: the
    middle of the run splits it in two, and times before or after it select all or nothing."""
    run = await write_history(make_gateway, tmp_path / "data")
    everything = set(KNOWN_ROWS)
    middle = datetime.fromtimestamp(run.middle, UTC)
    naive = middle.replace(tzinfo=None).isoformat()
    india = middle.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    cases = {
        ("--since", "2000-01-01", "--until", FAR_FUTURE): everything,  # a date alone: UTC
        ("--until", iso(run.started - 1)): set(),
        ("--until", middle.isoformat()): FIRST_HALF,
        ("--since", naive): everything - FIRST_HALF,
        ("--until", india): FIRST_HALF,
    }
    # Each case is a process of its own, run side by side.
    found = await asyncio.gather(*(asyncio.to_thread(report, run, *args) for args in cases))
    for (args, want), rows in zip(cases.items(), found, strict=True):
        assert {row["number"] for row in rows} == want, args


def test_report_on_a_missing_ledger_fails_clearly(tmp_path: Path) -> None:
    """No ledger in the data dir: a non-zero exit naming the missing file; none is created."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for fmt in ("csv", "json"):
        done = cli("settlement", "report", "--data-dir", empty, "--format", fmt, cwd=tmp_path)
        assert done.returncode != 0
        assert f"no ledger at {empty / LEDGER_FILE}" in done.stderr
    assert list(empty.iterdir()) == []


def test_report_on_a_missing_ledger_writes_no_report(tmp_path: Path) -> None:
    """No ledger: stdout, where the report goes, stays empty (no header or half a JSON array
    to mistake for an empty export, and no log line mixed in)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cli("settlement", "report", "--data-dir", empty, "--format", "json", cwd=tmp_path)
    assert done.returncode != 0
    assert done.stdout == ""
