"""The ledger's look-ups use their indexes: a query that scans a table is fast on the small
tables of the other tests and takes seconds on a ledger of millions of rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from manager_gateway.ledger.sqlite import (
    SQLiteLedger,
    journal_by_pk_sql,
    keys_by_pk_sql,
)


def plan(ledger: SQLiteLedger, sql: str, params: list[object]) -> str:
    rows = ledger._db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("count", [1, 3, 300])
def test_key_and_journal_look_ups_search_the_primary_key(tmp_path: Path, count: int) -> None:
    ledger = SQLiteLedger(tmp_path)
    try:
        keys = plan(ledger, keys_by_pk_sql(count), ["s", "e"] * count)
        assert "SEARCH i USING PRIMARY KEY" in keys and "SCAN i" not in keys, keys
        journal = plan(ledger, journal_by_pk_sql(count), [1, "request", "n"] * count)
        assert "SEARCH j USING PRIMARY KEY" in journal and "SCAN j" not in journal, journal
    finally:
        ledger.close()


def test_look_ups_find_exactly_the_wanted_rows(tmp_path: Path) -> None:
    """The join form answers what it is asked: present keys, not absent ones, once each."""
    ledger = SQLiteLedger(tmp_path)
    try:
        db = ledger._db
        db.executemany(
            "INSERT INTO idempotency VALUES (?,?,?,?,?,?)",
            [(f"s{i % 2}", f"e{i}", "BalanceIn", "d", "{}", float(i)) for i in range(10)],
        )
        wanted = [("s0", "e0"), ("s1", "e0"), ("s1", "e3"), ("s0", "e0"), ("s0", "e8")]
        rows = db.execute(keys_by_pk_sql(len(wanted)), [v for k in wanted for v in k]).fetchall()
        assert sorted((r[0], r[1]) for r in rows) == [
            ("s0", "e0"),
            ("s0", "e0"),
            ("s0", "e8"),
            ("s1", "e3"),
        ]
    finally:
        ledger.close()
