"""`ledger verify` against ledgers that have each problem it detects.

A real gateway writes the ledger (two accounts, a deposit, a withdrawal, a credit and its
deletion: orders 1 to 3, keys of subject "1"); each case then damages it in exactly one way with
sqlite3, as an operator's tool, a bad restore or a bug could, and `verify` must report exactly
that problem. tests/test_cli.py covers a consistent ledger and a tampered balance and credit
through the command line; the settlement journal's checks are in tests/e2e/test_settlement*.py.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.verify import verify_ledger

from ..conftest import GatewayFactory
from ..test_cli import cli, make_ledger

_TEMPLATE: list[Path] = []  # the module's ledger as the gateway wrote it, made once


async def written_ledger(
    make_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A fresh copy of the gateway-written ledger's data directory (AddUser hashes slowly on
    purpose, so the gateway writes it once per module)."""
    if not _TEMPLATE or not _TEMPLATE[0].exists():  # made once per test session
        _TEMPLATE.clear()
        template = tmp_path_factory.mktemp("written") / "data"
        await make_ledger(make_gateway, template)
        problems, summary = verify_ledger(template)
        assert problems == [], problems
        assert summary == "accounts=2 orders=3 next_order=4 idempotency_keys=6 settlement_journal=0"
        _TEMPLATE.append(template)
    data_dir = tmp_path_factory.mktemp("case") / "data"
    shutil.copytree(_TEMPLATE[0], data_dir)
    return data_dir


def corrupt(data_dir: Path, *statements: str) -> None:
    """Run `statements` on the ledger in autocommit mode, behind the gateway's back."""
    db = sqlite3.connect(data_dir / LEDGER_FILE, isolation_level=None)
    try:
        for statement in statements:
            db.execute(statement)
    finally:
        db.close()


#: case -> (the damage, every problem `verify` must report for it).
CASES: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "index-out-of-step": (
        (
            # An index whose entries no longer match its definition, as after a collation
            # change or a bad edit of the schema.
            "CREATE INDEX accounts_by_balance ON accounts (balance)",
            "PRAGMA writable_schema = ON",
            "UPDATE sqlite_master SET sql = 'CREATE INDEX accounts_by_balance ON accounts (credit)'"
            " WHERE name = 'accounts_by_balance'",
            "PRAGMA writable_schema = OFF",
        ),
        ["sqlite integrity_check: row 1 missing from index accounts_by_balance"],
    ),
    "version-skipped": (
        ("UPDATE records SET version = 3 WHERE ord = 3 AND version = 2",),
        ["order 3: version 3 where 2 was expected"],
    ),
    "kind-changed-between-versions": (
        ("UPDATE records SET cmd = 6 WHERE ord = 3 AND version = 2",),
        ["order 3: login or kind changed between versions"],
    ),
    "balance-edited": (
        ("UPDATE accounts SET balance = '71.00' WHERE login = 8001",),
        ["account 8001: balance 71.00, records sum to 70.00"],
    ),
    "credit-edited": (
        ("UPDATE accounts SET credit = '0.01' WHERE login = 8002",),
        ["account 8002: credit 0.01, records sum to 0"],
    ),
    "negative-balance": (
        # Consistent with its records, and still impossible: the gateway refuses overdrafts.
        (
            "UPDATE records SET profit = '-130.00' WHERE ord = 2",
            "UPDATE accounts SET balance = '-30.00' WHERE login = 8001",
        ),
        ["account 8001: negative balance or credit"],
    ),
    "account-lost": (
        (
            "DELETE FROM accounts WHERE login = 8001",
            "DELETE FROM idempotency WHERE ext_id = 'add-8001'",
        ),
        ["records of login 8001, which has no account"],
    ),
    "order-sequence-behind": (
        ("UPDATE meta SET value = '3' WHERE key = 'next_order'",),
        ["order sequence 3 is not ahead of order 3"],
    ),
    "order-sequence-lost": (
        # Without its row the sequence counts from 1, as a fresh ledger's would.
        ("DELETE FROM meta WHERE key = 'next_order'",),
        ["order sequence 1 is not ahead of order 3"],
    ),
    "answered-order-lost": (
        ("DELETE FROM records WHERE ord = 3",),
        [
            "key (1, c1) of CreditInSync: answered order 3, which is missing",
            "key (1, d1) of DeleteCreditSync: answered order 3, which is missing",
        ],
    ),
    "answer-of-another-login": (
        (
            "UPDATE idempotency SET outcome = json_set(outcome, '$.record.login', 8002)"
            " WHERE ext_id = 'b1'",
        ),
        ["key (1, b1) of BalanceInSync: answered a record of another login"],
    ),
    "answer-without-its-record": (
        ("UPDATE idempotency SET outcome = json_remove(outcome, '$.record') WHERE ext_id = 'b1'",),
        ["key (1, b1) of BalanceInSync: answered a record of another login"],
    ),
    "answered-login-lost": (
        ("DELETE FROM accounts WHERE login = 8002",),
        ["key (1, add-8002) of AddUser: answered login 8002, which is missing"],
    ),
    "outcome-names-nothing": (
        ("UPDATE idempotency SET outcome = '{\"user\": {}}' WHERE ext_id = 'add-8001'",),
        ["key (1, add-8001) of AddUser: outcome names neither an order nor a login"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_verify_reports_exactly_the_damage(
    make_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory, case: str
) -> None:
    """Each kind of damage `verify` detects, made to a gateway-written ledger: reported, with
    exactly its own problem lines and nothing else."""
    statements, expected = CASES[case]
    data_dir = await written_ledger(make_gateway, tmp_path_factory)
    corrupt(data_dir, *statements)
    problems, _ = verify_ledger(data_dir)
    assert sorted(problems) == sorted(expected)


async def test_verify_accepts_a_ledger_from_before_settlement(
    make_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A ledger written before the settlement journal existed has no such table: consistent,
    with no journal rows counted."""
    data_dir = await written_ledger(make_gateway, tmp_path_factory)
    corrupt(data_dir, "DROP TABLE settlement_journal")
    assert verify_ledger(data_dir) == (
        [],
        "accounts=2 orders=3 next_order=4 idempotency_keys=6 settlement_journal=0",
    )


async def test_cli_verify_fails_on_an_answered_order_that_is_missing(
    make_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Through the command line: the records of an answered order deleted; exit 1, one MISMATCH
    line per key that answered it, and the count on stderr."""
    data_dir = await written_ledger(make_gateway, tmp_path_factory)
    corrupt(data_dir, "DELETE FROM records WHERE ord = 3")
    done = cli("ledger", "verify", "--data-dir", data_dir, cwd=data_dir.parent)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "accounts=2 orders=2 next_order=4 idempotency_keys=6 settlement_journal=0",
        "MISMATCH key (1, c1) of CreditInSync: answered order 3, which is missing",
        "MISMATCH key (1, d1) of DeleteCreditSync: answered order 3, which is missing",
    ]
    assert "ledger inconsistent: 2 problem(s)" in done.stderr


async def test_cli_verify_reports_a_damaged_page_instead_of_crashing(
    make_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A page of the records table overwritten (a torn write, a bad disk): `verify` says the file
    is malformed on a MISMATCH line and exits 1, rather than dying with a traceback."""
    data_dir = await written_ledger(make_gateway, tmp_path_factory)
    db = sqlite3.connect(data_dir / LEDGER_FILE)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'records'").fetchone()[0]
    finally:
        db.close()
    with (data_dir / LEDGER_FILE).open("r+b") as ledger_file:
        ledger_file.seek((root - 1) * page_size + 8)  # the page's first cell pointer
        ledger_file.write(b"\xff\xff")  # points past the end of the page
    done = cli("ledger", "verify", "--data-dir", data_dir, cwd=data_dir.parent)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == "unreadable", done.stdout
    mismatches = [line for line in done.stdout.splitlines() if line.startswith("MISMATCH")]
    assert any("malformed" in line for line in mismatches), done.stdout
    problems, summary = verify_ledger(data_dir)  # in this process too (mutation testing)
    assert summary == "unreadable"
    assert len(problems) == 1 and problems[0].startswith("sqlite could not read the ledger: ")
