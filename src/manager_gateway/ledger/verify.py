"""`ledger verify`: recompute everything derivable from the finance history and compare.

Either engine: `verify_ledger` for the SQLite file, `verify_postgres` for a PostgreSQL ledger.
Checks: SQLite's own integrity (on SQLite); every order's versions run 1..n with one login and
one kind; each account's balance and credit equal the sum of its live (not deleted) records and
are not negative; the order sequence is ahead of every order; every idempotency key points at what
it answered; every settlement adjustment or transfer that moved money has its record, and every
reversal its deletion.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg

from ..runtime.records import TradeState, is_credit
from .sqlite import LEDGER_FILE


def verify_ledger(data_dir: Path) -> tuple[list[str], str]:
    """The SQLite ledger in `data_dir`: (problems, one-line summary); none means consistent."""
    path = data_dir / LEDGER_FILE
    if not path.is_file():
        return [f"no ledger at {path}"], "nothing to verify"
    db = sqlite3.connect(path)
    try:
        problems: list[str] = []
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"sqlite integrity_check: {integrity}")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        has_journal = db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'settlement_journal'"
        ).fetchone()
        return _verify(db, problems, int(meta.get("next_order", 1)), bool(has_journal))
    except sqlite3.DatabaseError as exc:  # a damaged page: say so, as a problem, not a traceback
        return [f"sqlite could not read the ledger: {exc}"], "unreadable"
    finally:
        db.close()


def verify_postgres(url: str) -> tuple[list[str], str]:
    """The PostgreSQL ledger at `url`, read in one snapshot, so it may run while nodes write:
    (problems, one-line summary)."""
    try:
        db = psycopg.connect(url)
    except psycopg.Error as exc:
        return [f"cannot connect to the ledger: {exc}"], "unreachable"
    try:
        db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        db.read_only = True
        row = db.execute("SELECT last_value, is_called FROM order_numbers").fetchone()
        last, called = row if row is not None else (0, True)
        next_order = int(last) + 1 if called else int(last)
        return _verify(db, [], next_order, True)
    except psycopg.Error as exc:
        return [f"postgresql could not read the ledger: {exc}"], "unreadable"
    finally:
        db.close()


def _verify(
    db: Any, problems: list[str], next_order: int, has_journal: bool
) -> tuple[list[str], str]:
    """The checks, on a DB-API connection of either engine (the queries are plain SQL)."""
    latest_profit: dict[int, Decimal] = {}
    first_profit: dict[int, Decimal] = {}
    versions: dict[int, tuple[int, int, bool, int]] = {}  # order -> (version, login, credit, state)
    for order, version, login, cmd, state, profit in db.execute(
        "SELECT ord, version, login, cmd, state, profit FROM records ORDER BY ord, version"
    ):
        credit = is_credit(cmd)
        previous = versions.get(order)
        expected = 1 if previous is None else previous[0] + 1
        if version != expected:
            problems.append(f"order {order}: version {version} where {expected} was expected")
        if previous is not None and (previous[1], previous[2]) != (login, credit):
            problems.append(f"order {order}: login or kind changed between versions")
        versions[order] = (version, login, credit, state)
        latest_profit[order] = Decimal(profit)
        first_profit.setdefault(order, Decimal(profit))

    expected_money: dict[int, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for order, (_, login, credit, state) in versions.items():
        if state != TradeState.DELETED:
            expected_money[login][int(credit)] += latest_profit[order]

    accounts = {
        login: (Decimal(balance), Decimal(credit))
        for login, balance, credit in db.execute("SELECT login, balance, credit FROM accounts")
    }
    for login, (balance, credit_amount) in accounts.items():
        want_balance, want_credit = expected_money.pop(login, [Decimal(0), Decimal(0)])
        if balance != want_balance:
            problems.append(f"account {login}: balance {balance}, records sum to {want_balance}")
        if credit_amount != want_credit:
            problems.append(
                f"account {login}: credit {credit_amount}, records sum to {want_credit}"
            )
        if balance < 0 or credit_amount < 0:
            problems.append(f"account {login}: negative balance or credit")
    for login in expected_money:
        problems.append(f"records of login {login}, which has no account")

    if versions and max(versions) >= next_order:
        problems.append(f"order sequence {next_order} is not ahead of order {max(versions)}")

    keys = 0
    for subject, ext_id, command, outcome_json in db.execute(
        "SELECT subject, ext_id, command, outcome FROM idempotency"
    ):
        keys += 1
        outcome = orjson.loads(outcome_json)
        name = f"key ({subject}, {ext_id}) of {command}"
        if "order" in outcome:
            current = versions.get(outcome["order"])
            record = outcome.get("record", {})
            if current is None:
                problems.append(f"{name}: answered order {outcome['order']}, which is missing")
            elif record.get("login") != current[1]:
                problems.append(f"{name}: answered a record of another login")
        elif "login" in outcome:
            if outcome["login"] not in accounts:
                problems.append(f"{name}: answered login {outcome['login']}, which is missing")
        else:
            problems.append(f"{name}: outcome names neither an order nor a login")

    journal = _verify_journal(db, versions, first_profit, problems) if has_journal else 0
    summary = (
        f"accounts={len(accounts)} orders={len(versions)} next_order={next_order} "
        f"idempotency_keys={keys} settlement_journal={journal}"
    )
    return problems, summary


def _verify_journal(
    db: Any,
    versions: dict[int, tuple[int, int, bool, int]],
    first_profit: dict[int, Decimal],
    problems: list[str],
) -> int:
    """Settlement journal against the records; the number of rows checked."""
    rows = {
        (company, space, number): (kind, code, login, order, Decimal(amount), reverses, cancelled)
        for company, space, number, kind, code, login, order, amount, reverses, cancelled in (
            db.execute(
                "SELECT company, space, number, kind, code, login, finance_order, amount,"
                " reverses, cancelled_by FROM settlement_journal"
            )
        )
    }
    for (company, space, number), row in rows.items():
        kind, code, login, order, amount, reverses, cancelled_by = row
        name = f"settlement {kind} {number!r} of company {company}"
        if order is None:
            if kind != "tombstone" and code == "0" and amount != 0:
                problems.append(f"{name}: moved {amount} with no finance record")
            continue
        record = versions.get(order)
        if record is None:
            problems.append(f"{name}: finance order {order} is missing")
            continue
        deleted = record[3] == TradeState.DELETED
        if record[1] != login:
            problems.append(f"{name}: finance order {order} belongs to login {record[1]}")
        if kind in ("adjustment", "transfer"):
            if first_profit[order] != amount:
                problems.append(
                    f"{name}: moved {amount}, but order {order} was made with {first_profit[order]}"
                )
            if cancelled_by is not None and not deleted:
                problems.append(f"{name}: cancelled by {cancelled_by!r}, order {order} not deleted")
        elif kind == "cancel":
            target = rows.get((company, space, reverses))
            if not deleted:
                problems.append(f"{name}: reversed order {order}, which is not deleted")
            # A target pruned by retention (it is older than its cancel) is no contradiction.
            if target is not None and target[6] != number:
                problems.append(f"{name}: reversed {reverses!r}, which is not marked cancelled")
    return len(rows)
