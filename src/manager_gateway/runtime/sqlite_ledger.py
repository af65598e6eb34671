"""The embedded SQLite ledger: append-only finance history, account state, idempotency keys.

WAL journal with `synchronous=FULL` by default: a commit has reached the disk before `commit`
returns, so it survives a process crash and a power loss. `NORMAL` survives a process crash only
and is faster; it is a setting (`ledger_synchronous`), not the default.

Money is stored as decimal text, never as REAL. Finance records are never updated in place: an
update or delete is a new row `(order, version + 1)`, so the full history stays and the current
state is the latest version of each order.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from .journal import JournalRow
from .records import Account, FinanceRecord
from .storage import Batch, IdempotencyKey, Snapshot, StorageError

LEDGER_FILE = "ledger.db"
SCHEMA_VERSION = 1
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
    login INTEGER PRIMARY KEY,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    leverage INTEGER NOT NULL,
    enable INTEGER NOT NULL,
    currency TEXT NOT NULL,
    digits INTEGER NOT NULL,
    balance TEXT NOT NULL,
    credit TEXT NOT NULL,
    registration_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    ord INTEGER NOT NULL,
    version INTEGER NOT NULL,
    login INTEGER NOT NULL,
    cmd INTEGER NOT NULL,
    state INTEGER NOT NULL,
    profit TEXT NOT NULL,
    comment TEXT NOT NULL,
    open_time INTEGER NOT NULL,
    close_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (ord, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    subject TEXT NOT NULL,
    ext_id TEXT NOT NULL,
    command TEXT NOT NULL,
    digest TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (subject, ext_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settlement_journal (
    company INTEGER NOT NULL,
    space TEXT NOT NULL,
    number TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    code TEXT NOT NULL,
    login INTEGER,
    user_name TEXT NOT NULL,
    finance_order INTEGER,
    amount TEXT NOT NULL,
    reverses TEXT,
    cancelled_by TEXT,
    answer TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (company, space, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS settlement_journal_by_time ON settlement_journal (created_at);
"""

JOURNAL_COLUMNS = (
    "company, space, number, kind, fingerprint, code, login, user_name, finance_order, amount,"
    " reverses, cancelled_by, answer, created_at"
)

_ACCOUNT_COLUMNS = (
    "login, grp, name, email, password_hash, leverage, enable, currency, digits, balance, credit,"
    " registration_time"
)
_RECORD_COLUMNS = (
    "ord, version, login, cmd, state, profit, comment, open_time, close_time, update_time"
)


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


def _account(row: tuple[Any, ...]) -> Account:
    (login, grp, name, email, pwd, leverage, enable, currency, digits, balance, credit, reg) = row
    return Account(
        int(login),
        str(grp),
        str(name),
        str(email),
        str(pwd),
        int(leverage),
        int(enable),
        str(currency),
        int(digits),
        Decimal(str(balance)),
        Decimal(str(credit)),
        int(reg),
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


def _record(row: tuple[Any, ...]) -> FinanceRecord:
    order, version, login, cmd, state, profit, comment, open_t, close_t, update_t = row
    return FinanceRecord(
        int(order),
        int(version),
        int(login),
        int(cmd),
        int(state),
        Decimal(str(profit)),
        str(comment),
        int(open_t),
        int(close_t),
        int(update_t),
    )


def journal_row(row: tuple[Any, ...]) -> JournalRow:
    """A journal row as read from the table (its answer is stored as text)."""
    (company, space, number, kind, fingerprint, code, login, user_name, order, amount,
     reverses, cancelled_by, answer, created_at) = row  # fmt: skip
    return JournalRow(
        int(company), str(space), str(number), str(kind), str(fingerprint), str(code),
        None if login is None else int(login), str(user_name),
        None if order is None else int(order),
        str(amount), reverses, cancelled_by, str(answer).encode(), float(created_at),
    )  # fmt: skip


def connect(
    path: Path, synchronous: str = "FULL", busy_timeout_ms: int = 5000
) -> sqlite3.Connection:
    """Open (creating if needed) a ledger database with the project's pragmas and schema.

    `busy_timeout_ms` is how long a commit waits for a write lock another process holds (a
    backup, `ledger verify`) before it fails and its batch is answered 500.
    """
    if synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"ledger_synchronous must be one of {SYNCHRONOUS_MODES}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves; check_same_thread=False because the
    # ledger is opened on the main thread and then used only from the single commit thread.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous.upper()}")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    db.executescript(SCHEMA)
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return db


class SQLiteLedger:
    """`Storage` on one SQLite file in WAL mode."""

    def __init__(
        self, data_dir: Path, synchronous: str = "FULL", busy_timeout_ms: int = 5000
    ) -> None:
        self.path = data_dir / LEDGER_FILE
        self._db = connect(self.path, synchronous, busy_timeout_ms)

    def load(self) -> Snapshot:
        db = self._db
        accounts = {
            a.login: a
            for a in map(_account, db.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts"))
        }
        records: dict[int, FinanceRecord] = {}
        for row in db.execute(f"SELECT {_RECORD_COLUMNS} FROM records ORDER BY ord, version"):
            record = _record(row)
            records[record.order] = record
        keys = [
            IdempotencyKey(s, e, c, d, o.encode(), t)
            for s, e, c, d, o, t in db.execute(
                "SELECT subject, ext_id, command, digest, outcome, created_at FROM idempotency"
                " ORDER BY created_at"
            )
        ]
        journal = [
            journal_row(row)
            for row in db.execute(
                f"SELECT {JOURNAL_COLUMNS} FROM settlement_journal ORDER BY created_at"
            )
        ]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        next_order = max(int(meta.get("next_order", 1)), max(records, default=0) + 1)
        next_login = int(meta.get("next_login", 1000))
        return Snapshot(accounts, records, keys, journal, next_order, next_login)

    def commit(self, batch: Batch) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if batch.accounts:
                    db.executemany(
                        f"INSERT OR REPLACE INTO accounts ({_ACCOUNT_COLUMNS})"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        [_account_row(a) for a in batch.accounts.values()],
                    )
                if batch.records:
                    db.executemany(
                        f"INSERT INTO records ({_RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        [_record_row(r) for r in batch.records],
                    )
                if batch.expired_keys:
                    db.executemany(
                        "DELETE FROM idempotency WHERE subject = ? AND ext_id = ?",
                        batch.expired_keys,
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
                if batch.pruned_journal:
                    db.executemany(
                        "DELETE FROM settlement_journal"
                        " WHERE company = ? AND space = ? AND number = ?",
                        batch.pruned_journal,
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
