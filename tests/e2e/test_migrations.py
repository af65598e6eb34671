"""Versioned migrations: a ledger made by gateway 0.1.0 (no migration records) is taken over as
it is, and each start or `ledger migrate` applies only what a ledger lacks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from manager_gateway.ledger.migrate import migrate_sqlite
from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.verify import verify_ledger

from ..conftest import GatewayFactory
from ..postgres import PostgresServer

MIGRATIONS = Path(__file__).parents[2] / "src/manager_gateway/ledger/migrations/sqlite"
PG_MIGRATIONS = MIGRATIONS.parent / "postgresql"
PG_SOURCE = "package:manager_gateway:ledger/migrations/postgresql"

# The schema gateway 0.1.0 wrote at each start (CREATE TABLE IF NOT EXISTS, no version table),
# as it was in its sqlite_ledger.py: the "previous version" a new one must take over.
SCHEMA_0_1_0 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE accounts (
    login INTEGER PRIMARY KEY, grp TEXT NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
    password_hash TEXT NOT NULL, leverage INTEGER NOT NULL, enable INTEGER NOT NULL,
    currency TEXT NOT NULL, digits INTEGER NOT NULL, balance TEXT NOT NULL, credit TEXT NOT NULL,
    registration_time INTEGER NOT NULL
);
CREATE TABLE records (
    ord INTEGER NOT NULL, version INTEGER NOT NULL, login INTEGER NOT NULL, cmd INTEGER NOT NULL,
    state INTEGER NOT NULL, profit TEXT NOT NULL, comment TEXT NOT NULL,
    open_time INTEGER NOT NULL, close_time INTEGER NOT NULL, update_time INTEGER NOT NULL,
    PRIMARY KEY (ord, version)
) WITHOUT ROWID;
CREATE TABLE idempotency (
    subject TEXT NOT NULL, ext_id TEXT NOT NULL, command TEXT NOT NULL, digest TEXT NOT NULL,
    outcome TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (subject, ext_id)
) WITHOUT ROWID;
CREATE TABLE settlement_journal (
    company INTEGER NOT NULL, space TEXT NOT NULL, number TEXT NOT NULL, kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL, code TEXT NOT NULL, login INTEGER, user_name TEXT NOT NULL,
    finance_order INTEGER, amount TEXT NOT NULL, reverses TEXT, cancelled_by TEXT,
    answer TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (company, space, number)
) WITHOUT ROWID;
CREATE INDEX settlement_journal_by_time ON settlement_journal (created_at);
CREATE INDEX records_by_login ON records (login, ord);
CREATE INDEX records_by_open_time ON records (open_time);
CREATE INDEX idempotency_by_time ON idempotency (created_at);
"""


def old_ledger(data_dir: Path) -> None:
    """A 0.1.0 ledger with one account holding 150.25 from two deposits."""
    data_dir.mkdir(parents=True)
    db = sqlite3.connect(data_dir / LEDGER_FILE)
    db.executescript(SCHEMA_0_1_0)
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema_version", "1"), ("next_order", "3"), ("next_login", "1000")],
    )
    db.execute(
        "INSERT INTO accounts VALUES"
        " (5001, 'demo', 'Old Timer', 'old@example.com', 'scrypt$x', 100, 1, 'USD', 2,"
        " '150.25', '0', 1700000000)"
    )
    db.executemany(
        "INSERT INTO records VALUES (?, 1, 5001, 6, 3, ?, 'deposit', 1700000000, 1700000000,"
        " 1700000000)",
        [(1, "100"), (2, "50.25")],
    )
    db.commit()
    db.close()


def applied(data_dir: Path) -> list[str]:
    db = sqlite3.connect(data_dir / LEDGER_FILE)
    try:
        return [row[0] for row in db.execute("SELECT migration_id FROM _yoyo_migration")]
    finally:
        db.close()


ALL = sorted(path.stem for path in MIGRATIONS.glob("*.sql"))


async def test_a_ledger_made_by_0_1_0_is_migrated_and_served_as_it_was(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "old"
    old_ledger(data_dir)
    assert verify_ledger(data_dir)[0] == []

    h = await make_gateway(data_dir=data_dir)
    assert applied(data_dir) == ALL
    client = await h.client()
    account = await client.ok("GetAccountByLogin", {"login": 5001})
    assert (account["name"], account["balance"]) == ("Old Timer", 150.25)
    assert (await client.ok("GetTradeByOrder", {"order": 2}))["profit"] == 50.25
    # The counters it kept carry on: the next order is 3.
    assert (await client.ok("BalanceIn", {"login": 5001, "amount": 1}))["order"] == 3
    await h.close_clients()
    await h.gateway.shutdown()
    assert verify_ledger(data_dir)[0] == []


def test_a_start_applies_only_what_the_ledger_lacks(tmp_path: Path) -> None:
    path = tmp_path / "ledger" / LEDGER_FILE
    assert migrate_sqlite(path) == ALL
    assert migrate_sqlite(path) == []
    assert applied(path.parent) == ALL


def test_ledger_migrate_brings_a_data_dir_up_to_date_without_serving(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    old_ledger(data_dir)
    command = [sys.executable, "-m", "manager_gateway.cli", "ledger", "migrate"]
    first = subprocess.run(
        [*command, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [*(f"applied {m}" for m in ALL), "ledger up to date"]
    assert applied(data_dir) == ALL
    again = subprocess.run(
        [*command, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60
    )
    assert again.stdout.splitlines() == ["ledger up to date"]


async def test_a_postgresql_ledger_at_its_first_migration_takes_the_next_one_with_its_data(
    make_gateway: GatewayFactory, postgres: PostgresServer
) -> None:
    """A PostgreSQL ledger from before several-node events (0001 only) with an account on it:
    a start adds the account versions and the outbox, and serves the account as it was."""
    url = postgres.database()
    backend = get_backend("postgresql+psycopg://" + url.partition("://")[2])
    try:
        first = MigrationList(m for m in read_migrations(PG_SOURCE) if m.id == "0001_ledger")
        backend.apply_migrations(backend.to_apply(first))
    finally:
        backend.connection.close()
    with psycopg.connect(url) as db:
        db.execute(
            "INSERT INTO accounts VALUES (5001, 'demo', 'Old Timer', 'old@example.com',"
            " 'scrypt$x', 100, 1, 'USD', 2, 150.25, 0, 1700000000)"
        )
        db.execute(
            "INSERT INTO records VALUES (1, 1, 5001, 6, 3, 150.25, 'deposit', 1700000000,"
            " 1700000000, 1700000000)"
        )
        db.execute("SELECT setval('order_numbers', 1)")

    h = await make_gateway(ledger_url=url)
    client = await h.client()
    account = await client.ok("GetAccountByLogin", {"login": 5001})
    assert (account["name"], account["balance"]) == ("Old Timer", 150.25)
    assert (await client.ok("BalanceInSync", {"login": 5001, "amount": 1}))["order"] == 2
    with psycopg.connect(url) as db:
        applied = [row[0] for row in db.execute("SELECT migration_id FROM _yoyo_migration")]
        version = db.execute("SELECT version FROM accounts WHERE login = 5001").fetchone()
    assert sorted(applied) == sorted(path.stem for path in PG_MIGRATIONS.glob("*.sql"))
    assert version == (1,)  # counted from the first change after the migration
    assert h.verify() == []
