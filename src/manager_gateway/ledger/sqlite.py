"""The embedded SQLite ledger: append-only finance history, account state, idempotency keys.

WAL journal with `synchronous=FULL` by default: a commit has reached the disk before `commit`
returns, so it survives a process crash and a power loss. `NORMAL` survives a process crash only
and is faster; it is a setting (`ledger_synchronous`), not the default.

Money is stored as decimal text, never as REAL. Finance records are never updated in place: an
update or delete is a new row `(order, version + 1)`, so the full history stays and the current
state is the latest version of each order.

Client reads of history (`SQLiteReader`) use connections of their own, on their own threads: WAL
lets them read committed data while the writer commits.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..runtime.records import Account, FinanceRecord
from ..runtime.storage import (
    Batch,
    Found,
    Lookup,
    RecordFilter,
    Snapshot,
    StorageError,
)
from .migrate import migrate_sqlite
from .rows import (
    ACCOUNT_COLUMNS,
    CURRENT_VERSION,
    JOURNAL_COLUMNS,
    KEY_COLUMNS,
    RECORD_COLUMNS,
    account_from_row,
    journal_row,
    key_from_row,
    latest_records,
    oldest_first,
    record_from_row,
)

LEDGER_FILE = "ledger.db"
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")

# Rows per IN (...) list of a look-up: well under SQLite's limit of bound parameters.
CHUNK = 300


def _account_row(a: Account) -> tuple[object, ...]:
    return (
        a.login,
        a.group,
        a.name,
        a.email,
        a.password_hash,
        a.leverage,
        a.enable,
        a.currency,
        a.digits,
        str(a.balance),
        str(a.credit),
        a.registration_time,
    )


def _record_row(r: FinanceRecord) -> tuple[object, ...]:
    return (
        r.order,
        r.version,
        r.login,
        r.cmd,
        r.state,
        str(r.profit),
        r.comment,
        r.open_time,
        r.close_time,
        r.update_time,
    )


def connect(
    path: Path, synchronous: str = "FULL", busy_timeout_ms: int = 5000
) -> sqlite3.Connection:
    """Open (creating if needed) a ledger database with the project's pragmas, its schema brought
    up to date first (`migrate.py`).

    `busy_timeout_ms` is how long a commit waits for a write lock another process holds (a
    backup, `ledger verify`) before it fails and its batch is answered 500.
    """
    if synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"ledger_synchronous must be one of {SYNCHRONOUS_MODES}")
    migrate_sqlite(path)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves; check_same_thread=False because the
    # ledger is opened on the main thread and then used only from the single commit thread.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous.upper()}")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return db


class SQLiteLedger:
    """`Storage` on one SQLite file in WAL mode."""

    def __init__(
        self, data_dir: Path, synchronous: str = "FULL", busy_timeout_ms: int = 5000
    ) -> None:
        self.path = data_dir / LEDGER_FILE
        self._db = connect(self.path, synchronous, busy_timeout_ms)

    def load(self, window: int) -> Snapshot:
        """Every account, and the newest `window` orders, keys and journal rows."""
        db = self._db
        accounts = {
            a.login: a
            for a in map(account_from_row, db.execute(f"SELECT {ACCOUNT_COLUMNS} FROM accounts"))
        }
        newest = db.execute("SELECT MAX(ord) FROM records").fetchone()[0] or 0
        records = latest_records(
            db.execute(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE ord > ? ORDER BY ord, version",
                (newest - window,),
            )
        )
        rows, keys_beyond_until = _newest(db, KEY_COLUMNS, "idempotency", window)
        keys = [key_from_row(row) for row in rows]
        rows, journal_beyond_until = _newest(db, JOURNAL_COLUMNS, "settlement_journal", window)
        journal = [journal_row(row) for row in rows]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        next_order = max(int(meta.get("next_order", 1)), newest + 1)
        next_login = int(meta.get("next_login", 1000))
        return Snapshot(
            accounts,
            records,
            keys,
            journal,
            next_order,
            next_login,
            keys_beyond_until,
            journal_beyond_until,
        )

    def fetch(self, lookup: Lookup) -> Found:
        try:
            return self._fetch(lookup)
        except sqlite3.Error as exc:
            raise StorageError(f"ledger read failed: {exc}") from exc

    def _fetch(self, lookup: Lookup) -> Found:
        db = self._db
        keys = [
            key_from_row(row)
            for chunk in _chunks(lookup.keys)
            for row in db.execute(keys_by_pk_sql(len(chunk)), [v for key in chunk for v in key])
        ]
        journal = [
            journal_row(row)
            for chunk in _chunks(lookup.journal)
            for row in db.execute(journal_by_pk_sql(len(chunk)), [v for key in chunk for v in key])
        ]
        orders = {*lookup.orders, *(r.finance_order for r in journal if r.finance_order)}
        records = {
            order: record
            for chunk in _chunks(sorted(orders))
            for order, record in latest_records(
                db.execute(
                    f"SELECT {RECORD_COLUMNS} FROM records"
                    f" WHERE ord IN ({','.join('?' * len(chunk))}) ORDER BY ord, version",
                    chunk,
                )
            ).items()
        }
        return Found(keys, journal, list(records.values()))

    def reader(self) -> SQLiteReader:
        return SQLiteReader(self.path)

    def commit(self, batch: Batch) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if batch.accounts:
                    db.executemany(
                        f"INSERT OR REPLACE INTO accounts ({ACCOUNT_COLUMNS})"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        [_account_row(a) for a in batch.accounts.values()],
                    )
                if batch.records:
                    db.executemany(
                        f"INSERT INTO records ({RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        [_record_row(r) for r in batch.records],
                    )
                if batch.expire_keys_until is not None:
                    db.execute(
                        "DELETE FROM idempotency WHERE created_at <= ?", (batch.expire_keys_until,)
                    )
                if batch.keys:
                    db.executemany(
                        "INSERT OR REPLACE INTO idempotency VALUES (?,?,?,?,?,?)",
                        [
                            (
                                k.subject,
                                k.ext_id,
                                k.command,
                                k.digest,
                                k.outcome_json.decode(),
                                k.created_at,
                            )
                            for k in batch.keys
                        ],
                    )
                if batch.prune_journal_until is not None:
                    db.execute(
                        "DELETE FROM settlement_journal WHERE created_at <= ?",
                        (batch.prune_journal_until,),
                    )
                if batch.journal:
                    db.executemany(
                        f"INSERT OR REPLACE INTO settlement_journal ({JOURNAL_COLUMNS})"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [
                            (*row[:12], row.answer_json.decode(), row.created_at)
                            for row in batch.journal
                        ],
                    )
                db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("next_order", str(batch.next_order)), ("next_login", str(batch.next_login))],
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"ledger commit failed: {exc}") from exc

    def close(self) -> None:
        self._db.close()


class SQLiteReader:
    """`HistoryReader` on read-only connections, one per thread that reads."""

    def __init__(self, path: Path) -> None:
        self._uri = f"{path.resolve().as_uri()}?mode=ro"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def record(self, order: int) -> FinanceRecord | None:
        row = (
            self._db()
            .execute(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE ord = ? ORDER BY version DESC LIMIT 1",
                (order,),
            )
            .fetchone()
        )
        return None if row is None else record_from_row(row)

    def find_records(self, wanted: RecordFilter) -> tuple[list[FinanceRecord], int]:
        where: list[str] = [CURRENT_VERSION]
        params: list[object] = []
        if wanted.logins is not None:
            where.append("r.login IN (SELECT value FROM json_each(?))")
            params.append(_json_list(wanted.logins))
        if wanted.cmd is not None:
            where.append("r.cmd = ?")
            params.append(wanted.cmd)
        if wanted.open_from is not None:
            where.append("r.open_time >= ?")
            params.append(wanted.open_from)
        if wanted.open_to is not None:
            where.append("r.open_time <= ?")
            params.append(wanted.open_to)
        condition = " AND ".join(where)
        db = self._db()
        # One read transaction, so the page and the count see the same commits.
        db.execute("BEGIN")
        try:
            rows = db.execute(
                f"SELECT {RECORD_COLUMNS} FROM records AS r WHERE {condition}"
                " ORDER BY r.ord DESC LIMIT ? OFFSET ?",
                [*params, wanted.limit, wanted.offset],
            ).fetchall()
            count = db.execute(
                f"SELECT COUNT(*) FROM records AS r WHERE {condition}", params
            ).fetchone()[0]
        finally:
            db.execute("COMMIT")
        return [record_from_row(row) for row in rows], int(count)

    def journal_rows(self) -> int:
        try:
            return int(self._db().execute("SELECT COUNT(*) FROM settlement_journal").fetchone()[0])
        except sqlite3.Error as exc:  # closed with the gateway, or the disk failing
            raise StorageError(f"ledger read failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()


def _json_list(values: Iterable[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"


def _newest(
    db: sqlite3.Connection, columns: str, table: str, window: int
) -> tuple[list[tuple[Any, ...]], float]:
    """The newest `window` rows of a table with `created_at` last among `columns`, oldest
    first, and the `created_at` of the newest row left out (0 when none is)."""
    rows = db.execute(
        f"SELECT {columns} FROM {table} ORDER BY created_at DESC LIMIT ?", (window + 1,)
    ).fetchall()
    return oldest_first(rows, window)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _tuples(count: int, width: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return ",".join([one] * count)


# Look-ups by primary key as a join with the wanted keys: SQLite (3.40) answers a row-value
# `(a, b) IN (VALUES ...)` with a scan of the whole table, and the join with a search of the
# primary key per wanted row (tests/unit/test_ledger_queries.py checks the plans).
def keys_by_pk_sql(count: int) -> str:
    return (
        f"WITH wanted(subject, ext_id) AS (VALUES {_tuples(count, 2)})"
        f" SELECT {', '.join('i.' + c for c in KEY_COLUMNS.split(', '))}"
        " FROM wanted JOIN idempotency AS i"
        " ON i.subject = wanted.subject AND i.ext_id = wanted.ext_id"
    )


def journal_by_pk_sql(count: int) -> str:
    columns = ", ".join("j." + c.strip() for c in JOURNAL_COLUMNS.split(","))
    return (
        f"WITH wanted(company, space, number) AS (VALUES {_tuples(count, 3)})"
        f" SELECT {columns} FROM wanted JOIN settlement_journal AS j"
        " ON j.company = wanted.company AND j.space = wanted.space AND j.number = wanted.number"
    )
