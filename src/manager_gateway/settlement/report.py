"""`manager-gateway settlement report`: the journal, for reconciliation with the platform.

The platform's interface has no reconciliation endpoint, so an operator compares this export with
the platform's own records. It reads the ledger file directly (read-only, beside a running
gateway: SQLite's WAL lets it) and writes CSV or JSON to a stream.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..ledger.rows import JOURNAL_COLUMNS, journal_row
from ..ledger.sqlite import LEDGER_FILE

FIELDS = (
    "time",
    "company",
    "space",
    "number",
    "kind",
    "code",
    "msg",
    "login",
    "user_name",
    "finance_order",
    "amount",
    "reverses",
    "cancelled_by",
)


def parse_time(text: str) -> float:
    """An ISO 8601 date or time (UTC unless it says otherwise) as unix seconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def journal_rows(
    data_dir: Path, since: float | None = None, until: float | None = None
) -> Iterator[dict[str, Any]]:
    """Journal rows with `since <= created_at < until`, oldest first, as report rows. A missing
    ledger raises here, before anything is written."""
    path = data_dir / LEDGER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no ledger at {path}")
    return _rows(path, since, until)


def _rows(path: Path, since: float | None, until: float | None) -> Iterator[dict[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        query = f"SELECT {JOURNAL_COLUMNS} FROM settlement_journal WHERE created_at >= ?"
        params: list[float] = [since if since is not None else float("-inf")]
        if until is not None:
            query += " AND created_at < ?"
            params.append(until)
        for raw in db.execute(query + " ORDER BY created_at, company, number", params):
            row = journal_row(raw)
            yield {
                "time": datetime.fromtimestamp(row.created_at, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "company": row.company,
                "space": row.space,
                "number": row.number,
                "kind": row.kind,
                "code": row.code,
                "msg": orjson.loads(row.answer_json).get("msg", ""),
                "login": row.login,
                "user_name": row.user_name,
                "finance_order": row.finance_order,
                "amount": row.amount,
                "reverses": row.reverses,
                "cancelled_by": row.cancelled_by,
            }
    finally:
        db.close()


def write_report(rows: Iterator[dict[str, Any]], out: TextIO, fmt: str) -> int:
    """Write `rows` as CSV (with a header) or JSON (one array); the number written."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
        return count
    out.write("[")
    for row in rows:
        out.write(("," if count else "") + "\n" + orjson.dumps(row).decode())
        count += 1
    out.write("\n]\n")
    return count
