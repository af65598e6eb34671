"""The ledger on the real SQLite file: how a new one starts, what its reads say when SQLite fails
(the operator reads it in the log), and the history readers' connections, one per thread, kept
and closed."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from manager_gateway.ledger.sqlite import (
    LEDGER_FILE,
    SQLiteLedger,
    SQLiteReader,
)
from manager_gateway.runtime.storage import Lookup, StorageError

SQLITE_MIGRATIONS = Path(__file__).parents[2] / "src/manager_gateway/ledger/migrations/sqlite"


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_failed_look_up_names_the_sqlite_error(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path)
    ledger.close()
    with pytest.raises(StorageError) as caught:
        ledger.fetch(Lookup(orders=[1]))
    assert str(caught.value) == "ledger read failed: Cannot operate on a closed database."


def test_a_failed_journal_count_names_the_sqlite_error(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path)
    ledger.close()
    db = sqlite3.connect(tmp_path / LEDGER_FILE)
    db.execute("DROP TABLE settlement_journal")
    db.close()
    reader = SQLiteReader(tmp_path / LEDGER_FILE)  # a ledger opened again would make it anew
    try:
        with pytest.raises(StorageError) as caught:
            reader.journal_rows()
        assert str(caught.value) == "ledger read failed: no such table: settlement_journal"
    finally:
        reader.close()


def test_a_reader_keeps_one_connection_per_thread_until_closed(tmp_path: Path) -> None:
    """Reads on one thread share one read-only connection; `close` releases it."""
    ledger = SQLiteLedger(tmp_path)
    reader = ledger.reader()
    before = open_descriptors()
    try:
        for order in range(1, 21):
            assert reader.record(order) is None
        assert reader.journal_rows() == 0
        opened = open_descriptors() - before
        assert 1 <= opened <= 3, opened  # the file, and at most its WAL and index
    finally:
        reader.close()
        ledger.close()
    assert open_descriptors() < before  # the writer's too, now


def test_a_new_ledger_makes_its_directories_and_records_its_migrations(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet"
    SQLiteLedger(data_dir).close()
    db = sqlite3.connect(data_dir / LEDGER_FILE)
    try:
        applied = [row[0] for row in db.execute("SELECT migration_id FROM _yoyo_migration")]
    finally:
        db.close()
    assert applied == [path.stem for path in sorted(SQLITE_MIGRATIONS.glob("*.sql"))]
    assert applied[0] == "0001_ledger"


def test_an_unknown_synchronous_mode_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        SQLiteLedger(tmp_path, "OFF")
    assert str(caught.value) == "ledger_synchronous must be one of ('FULL', 'NORMAL', 'EXTRA')"
    assert not (tmp_path / LEDGER_FILE).exists()
