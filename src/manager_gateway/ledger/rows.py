"""Ledger rows as both engines read them back, and the column lists they are read in.

What a row holds does not depend on the engine: SQLite hands back decimal text and PostgreSQL
`Decimal`, and `Decimal(str(...))` reads either exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from ..runtime.journal import JournalRow
from ..runtime.records import Account, FinanceRecord
from ..runtime.storage import IdempotencyKey

JOURNAL_COLUMNS = (
    "company, space, number, kind, fingerprint, code, login, user_name, finance_order, amount,"
    " reverses, cancelled_by, answer, created_at"
)

ACCOUNT_COLUMNS = (
    "login, grp, name, email, password_hash, leverage, enable, currency, digits, balance, credit,"
    " registration_time"
)
RECORD_COLUMNS = (
    "ord, version, login, cmd, state, profit, comment, open_time, close_time, update_time"
)
KEY_COLUMNS = "subject, ext_id, command, digest, outcome, created_at"
# A record row `r` that is its order's current version (the same SQL on both engines).
CURRENT_VERSION = (
    "NOT EXISTS (SELECT 1 FROM records AS n WHERE n.ord = r.ord AND n.version > r.version)"
)


def account_from_row(row: Iterable[Any]) -> Account:
    """From `ACCOUNT_COLUMNS`, and a shared ledger's `version` after them."""
    (login, grp, name, email, pwd, leverage, enable, currency, digits, balance, credit, reg,
     *version) = row  # fmt: skip
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
        int(version[0]) if version else 0,
    )


def record_from_row(row: Iterable[Any]) -> FinanceRecord:
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


def journal_row(row: Iterable[Any]) -> JournalRow:
    """A journal row as read from the table (its answer is stored as text)."""
    (company, space, number, kind, fingerprint, code, login, user_name, order, amount,
     reverses, cancelled_by, answer, created_at) = row  # fmt: skip
    return JournalRow(
        int(company), str(space), str(number), str(kind), str(fingerprint), str(code),
        None if login is None else int(login), str(user_name),
        None if order is None else int(order),
        str(amount), reverses, cancelled_by, str(answer).encode(), float(created_at),
    )  # fmt: skip


def key_from_row(row: Iterable[Any]) -> IdempotencyKey:
    subject, ext_id, command, digest, outcome, created_at = row
    return IdempotencyKey(
        subject, ext_id, command, digest, str(outcome).encode(), float(created_at)
    )


def latest_records(rows: Iterable[Iterable[Any]]) -> dict[int, FinanceRecord]:
    """The last version of each order, from rows ordered by (order, version)."""
    records: dict[int, FinanceRecord] = {}
    for row in rows:
        record = record_from_row(row)
        records[record.order] = record
    return records


def oldest_first(
    newest_first: list[tuple[Any, ...]], window: int
) -> tuple[list[tuple[Any, ...]], float]:
    """Up to `window + 1` rows with `created_at` last, newest first, as a load reads them: the
    newest `window` oldest first, and the `created_at` of the newest row left out (0 when none
    is)."""
    rows = list(newest_first)
    beyond_until = float(rows.pop()[-1]) if len(rows) > window else 0.0
    rows.reverse()
    return rows, beyond_until
