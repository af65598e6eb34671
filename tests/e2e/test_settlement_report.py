"""`settlement report`'s reading and writing, in this process (tests/e2e/test_settlement_ledger.py
runs the command itself): the journal a real gateway wrote, row by row with every field, the
--since/--until bounds to the exact row, and the exact CSV and JSON text."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.settlement.report import FIELDS, journal_rows, parse_time, write_report

from ..conftest import GatewayFactory
from .test_settlement_ledger import KNOWN_ROWS, LOGIN, OTHER, Run, summary, write_history

#: The sentence each row's answer carried (a tombstone was never an answer).
MESSAGES = {
    "open-1": "success",
    "open-2": "success",
    "cancel-2": "success",
    "close-3": "success",
    "tx-4": "success",
    "refused-5": "the wallet holds 987.50, less than 5000.00",
    "ghost-6": "",
    "cancel-6": "no adjustment 'ghost-6' was received; it will not be applied",
    "cancel-7": "adjustment 'refused-5' was received but not processed (INSUFFICIENT_FUNDS)",
}
USER_NAMES = {number: f"user-{LOGIN}" for number in KNOWN_ROWS} | {
    "close-3": f"user-{OTHER}",
    "tx-4": str(OTHER),
}


@pytest.fixture
async def run(tmp_path: Path, make_gateway: GatewayFactory) -> Run:
    return await write_history(make_gateway, tmp_path / "data")


def created_at(run: Run) -> dict[str, float]:
    """Each row's exact creation time, as the ledger holds it."""
    db = sqlite3.connect(run.data_dir / LEDGER_FILE)
    try:
        return dict(db.execute("SELECT number, created_at FROM settlement_journal").fetchall())
    finally:
        db.close()


def numbers(rows: Any) -> list[str]:
    return [row["number"] for row in rows]


async def test_every_journal_row_with_every_field(run: Run) -> None:
    """One report row per journal row, oldest first, with the FIELDS in order: the time in UTC
    to the millisecond, the company, the links, the login and the platform's user name, what
    moved, and the sentence of its answer."""
    rows = list(journal_rows(run.data_dir))
    assert all(list(row) == list(FIELDS) for row in rows)
    assert {row["number"]: summary(row) for row in rows} == KNOWN_ROWS
    assert {row["number"]: row["msg"] for row in rows} == MESSAGES
    assert {row["number"]: row["user_name"] for row in rows} == USER_NAMES
    assert {row["company"] for row in rows} == {1}
    created = created_at(run)
    assert numbers(rows) == sorted(created, key=lambda number: (created[number], number))
    for row in rows:
        moment = datetime.fromtimestamp(created[row["number"]], UTC)
        assert row["time"] == moment.isoformat(timespec="milliseconds")
        assert row["time"].endswith("+00:00") and len(row["time"]) == 29


async def test_since_is_inclusive_and_until_exclusive_to_the_exact_row(run: Run) -> None:
    created = created_at(run)
    in_order = sorted(created, key=lambda number: (created[number], number))
    third = created[in_order[2]]
    assert numbers(journal_rows(run.data_dir, since=third)) == in_order[2:]
    assert numbers(journal_rows(run.data_dir, until=third)) == in_order[:2]
    assert numbers(journal_rows(run.data_dir, since=third, until=third)) == []
    after = created[in_order[-1]] + 0.001
    assert numbers(journal_rows(run.data_dir, until=after)) == in_order
    assert numbers(journal_rows(run.data_dir, since=after)) == []


def test_a_missing_ledger_is_named_before_anything_is_read(tmp_path: Path) -> None:
    """journal_rows raises at once (the command writes nothing then), naming the file, and
    creates nothing."""
    with pytest.raises(FileNotFoundError) as raised:
        journal_rows(tmp_path)  # not iterated
    assert str(raised.value) == f"no ledger at {tmp_path / LEDGER_FILE}"
    assert list(tmp_path.iterdir()) == []


ROWS = [
    {
        "time": "2026-01-02T03:04:05.678+00:00", "company": 1, "space": "request",
        "number": "a,1", "kind": "adjustment", "code": "0", "msg": "success", "login": 1001,
        "user_name": "u", "finance_order": 3, "amount": "-12.50", "reverses": None,
        "cancelled_by": "c",
    },
    {
        "time": "2026-01-02T03:04:06.000+00:00", "company": 2, "space": "txid",
        "number": "t", "kind": "transfer", "code": "INSUFFICIENT_FUNDS", "msg": 'say "no"',
        "login": None, "user_name": "v", "finance_order": None, "amount": "0",
        "reverses": None, "cancelled_by": None,
    },
]  # fmt: skip


def test_json_is_one_array_with_a_row_per_line() -> None:
    out = io.StringIO()
    assert write_report(iter(ROWS), out, "json") == 2
    first, second = (orjson.dumps(row).decode() for row in ROWS)
    assert out.getvalue() == f"[\n{first},\n{second}\n]\n"
    assert orjson.loads(out.getvalue()) == ROWS
    empty = io.StringIO()
    assert write_report(iter([]), empty, "json") == 0
    assert empty.getvalue() == "[\n]\n"


def test_csv_has_a_header_and_a_line_per_row() -> None:
    out = io.StringIO()
    assert write_report(iter(ROWS), out, "csv") == 2
    lines = out.getvalue().split("\n")
    assert lines[0] == ",".join(FIELDS)
    assert lines[1].startswith('2026-01-02T03:04:05.678+00:00,1,request,"a,1",adjustment,')
    assert lines[3:] == [""]  # each line ends with "\n", never "\r\n"
    as_text = [{k: "" if v is None else str(v) for k, v in row.items()} for row in ROWS]
    assert list(csv.DictReader(io.StringIO(out.getvalue()))) == as_text
    empty = io.StringIO()
    assert write_report(iter([]), empty, "csv") == 0
    assert empty.getvalue() == ",".join(FIELDS) + "\n"


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
        ("2026-01-02T03:04:05", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T05:04:05+02:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05.250Z", datetime(2026, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC)),
    ],
)
def test_times_are_utc_unless_they_say_otherwise(text: str, moment: datetime) -> None:
    assert parse_time(text) == moment.timestamp()


@pytest.fixture
def india(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local time at UTC+05:30 (a POSIX TZ rule: no time zone database needed)."""
    monkeypatch.setenv("TZ", "IST-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("india")
def test_a_time_without_an_offset_is_utc_whatever_the_local_zone() -> None:
    """An operator in India passing --since 2026-01-02 means midnight UTC, not local midnight."""
    assert time.localtime(0).tm_gmtoff == 5 * 3600 + 1800
    assert parse_time("2026-01-02") == datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    assert (
        parse_time("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    )
