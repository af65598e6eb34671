"""Versioned migrations: a ledger made by gateway 0.1.0 (no migration records) is taken over as
it is, and each start or `ledger migrate` applies only what a ledger lacks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yoyo.backends.base
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from manager_gateway.ledger import migrate
from manager_gateway.ledger.migrate import MigrationError, migrate_postgres, migrate_sqlite
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
PG_ALL = sorted(path.stem for path in PG_MIGRATIONS.glob("*.sql"))


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
    assert sorted(applied) == PG_ALL
    assert version == (1,)  # counted from the first change after the migration
    assert h.verify() == []


def test_both_spellings_of_a_postgresql_url_are_migrated(postgres: PostgresServer) -> None:
    """`postgres://` is libpq's other spelling; a `://` later in the URL (a query value) does
    not change which engine it names."""
    short = "postgres://" + postgres.database().partition("://")[2]
    assert sorted(migrate_postgres(short)) == PG_ALL
    assert migrate_postgres(short) == []  # up to date: nothing applied twice
    odd = postgres.database() + "&application_name=gateway://migrate"
    assert sorted(migrate_postgres(odd)) == PG_ALL


def test_a_url_of_another_database_is_refused_by_name() -> None:
    with pytest.raises(MigrationError) as refused:
        migrate_postgres("mysql://root@localhost/ledger")
    assert str(refused.value) == "not a PostgreSQL URL: mysql://..."


def test_an_unreachable_server_is_one_line_naming_the_cause(tmp_path: Path) -> None:
    """libpq's message runs over several lines; the refusal is one, with its words intact."""
    url = f"postgresql://nobody@/ledger?host={tmp_path}&port=1"  # no server listens there
    with pytest.raises(MigrationError) as refused:
        migrate_postgres(url)
    message = str(refused.value)
    prefix = "cannot connect to the ledger to migrate it: "
    assert message.startswith(prefix)
    assert "No such file or directory" in message and str(tmp_path) in message
    assert "\n" not in message and "  " not in message


def test_a_migration_held_by_another_process_is_refused_after_the_wait(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock row left by a process killed while migrating: the start gives up after
    LOCK_TIMEOUT_S and says what to do, and applies nothing."""
    url = postgres.database()
    migrate_postgres(url)  # creates yoyo's tables
    with psycopg.connect(url) as db:
        db.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 4242)")
    monkeypatch.setattr(migrate, "LOCK_TIMEOUT_S", 0.2)
    with pytest.raises(MigrationError) as refused:
        migrate_postgres(url)
    assert str(refused.value) == (
        "another process has been migrating this ledger for over 0.2 s; if none is (one was"
        " killed while migrating), remove its row from yoyo_lock"
    )


def test_a_file_that_is_not_a_ledger_is_refused_at_once_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before yoyo's lock, which retries any database error for LOCK_TIMEOUT_S."""

    def no_waiting(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s for a lock on a file that is not a ledger")

    monkeypatch.setattr(yoyo.backends.base.time, "sleep", no_waiting)
    path = tmp_path / LEDGER_FILE
    path.write_bytes(b"not a database\n" * 1000)
    with pytest.raises(MigrationError) as refused:
        migrate_sqlite(path)
    assert str(refused.value) == "migrating the ledger failed: file is not a database"
    assert path.read_bytes() == b"not a database\n" * 1000
