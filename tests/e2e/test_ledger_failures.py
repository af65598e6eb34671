"""Ledger commits that fail where the other failure tests do not reach: half-way through the
transaction, and with a retry of the same extID waiting on the failed batch.

The disk-full, lock and read-only tests fail at BEGIN or COMMIT; `TornLedger` fails between them,
on SQLite's own constraint, so only the ROLLBACK stands between the half-written batch and the
next commit. `GatedLedger.fail_next` fails a commit the test holds open until it is ready.
"""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.verify import verify_ledger
from manager_gateway.runtime import mainloop
from manager_gateway.runtime.records import FinanceRecord
from manager_gateway.runtime.storage import Batch, StorageError

from ..conftest import Client, GatewayFactory, captured_log, ledger
from ..fakes import TornLedger

LOGIN = 1001
WAIT_S = 10  # bound on waiting for the ledger thread to reach the held commit
NOTHING_APPLIED = "the ledger could not record the operation; nothing was applied"


def read_ledger(data_dir: Path) -> dict[str, Any]:
    """What another process sees in the ledger: records, money and keys (read-only)."""
    db = sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True)
    try:
        return {
            "records": db.execute(
                "SELECT ord, version, login, profit, comment FROM records ORDER BY ord, version"
            ).fetchall(),
            "accounts": db.execute(
                "SELECT login, balance, credit FROM accounts ORDER BY login"
            ).fetchall(),
            "keys": sorted(row[0] for row in db.execute("SELECT ext_id FROM idempotency")),
        }
    finally:
        db.close()


def assert_nothing_applied(answer: dict[str, Any], ext_id: str) -> None:
    assert answer == {
        "extID": ext_id,
        "status": 500,
        "error": "INTERNAL_ERROR",
        "message": NOTHING_APPLIED,
    }


async def test_commit_failing_inside_the_transaction_is_rolled_back(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A commit that fails between BEGIN and COMMIT (after the account and one record were
    written) leaves nothing visible, and the very next commit on the same ledger succeeds."""
    data_dir = tmp_path / "data"
    store = TornLedger(data_dir, "NORMAL")
    gw = await make_gateway(data_dir=data_dir, storage=store)
    client = await gw.client()
    await gw.add_user(client, LOGIN)
    kept = await client.ok("BalanceInSync", {"login": LOGIN, "amount": 10.0}, ext_id="kept")
    before = read_ledger(data_dir)

    store.tear_next()
    failed = await client.request(
        "CreditIn", {"login": LOGIN, "amount": 5.0, "comment": "torn"}, ext_id="torn"
    )
    assert store.torn == 1
    assert_nothing_applied(failed, "torn")
    assert gw.gateway.metrics.commit_failures == 1
    assert read_ledger(data_dir) == before  # no half of the batch reached the file

    after = await client.ok(
        "CreditInSync", {"login": LOGIN, "amount": 7.0, "comment": "after"}, ext_id="after"
    )
    assert after["order"] == kept["order"] + 1  # the torn batch's order was never published
    client.responses.pop("torn")
    retried = await client.ok(
        "CreditIn", {"login": LOGIN, "amount": 5.0, "comment": "torn"}, ext_id="torn"
    )
    assert retried["order"] == after["order"] + 1
    account = await client.ok("GetAccountByLogin", {"login": LOGIN})
    assert (account["balance"], account["credit"]) == (10.0, 12.0)
    seen = read_ledger(data_dir)
    assert seen["records"] == [
        *before["records"],
        (after["order"], 1, LOGIN, "7.00", "after"),
        (retried["order"], 1, LOGIN, "5.00", "torn"),
    ]
    assert seen["accounts"] == [(LOGIN, "10.00", "12.00")]
    assert seen["keys"] == sorted([*before["keys"], "after", "torn"])
    assert verify_ledger(data_dir)[0] == []


def test_torn_ledger_fails_on_sqlite_not_on_its_own(tmp_path: Path) -> None:
    """The double's failure is SQLite refusing the duplicate record inside the transaction: the
    ledger raises StorageError for the constraint, and is left with no transaction open."""
    store = TornLedger(tmp_path, "NORMAL")
    try:
        record = FinanceRecord(1, 1, LOGIN, 6, 3, Decimal(1), "x", 0, 0, 0)
        store.tear_next()
        with pytest.raises(StorageError, match="UNIQUE constraint failed: records"):
            store.commit(Batch(records=[record], next_order=2, next_login=1000))
        assert not store._db.in_transaction
        store.commit(Batch(records=[record], next_order=2, next_login=1000))
        assert store.load(window=10).records.keys() == {1}
    finally:
        store.close()


def frame(client: Client, command: str, data: dict[str, Any], ext_id: str) -> bytes:
    request = {"command": command, "extID": ext_id, "data": data, "__token": client.token}
    return orjson.dumps(request) + b"\r\n"


@pytest.mark.parametrize("command", ["CreditIn", "CreditInSync"])
async def test_failed_commit_answers_the_retry_waiting_on_it(
    make_gateway: GatewayFactory, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same extID sent twice in one batch, whose commit is held and then fails: the first
    is applied in the batch and the retry follows it; both are answered 500 "nothing was
    applied", and a later retry is applied once."""
    gw = await make_gateway(gated=True)
    client = await gw.client()
    await gw.add_user(client, LOGIN)
    store = ledger(gw)
    data = {"login": LOGIN, "amount": 9.0, "comment": "twice"}

    store.commit_started.clear()
    store.hold()
    # One write, so both frames reach the main loop in the same turn: one batch, the second
    # request a retry of the first while the first is not committed yet.
    first = client.expect("dup")
    client.send_raw(frame(client, command, data, "dup") * 2)
    assert await asyncio.to_thread(store.commit_started.wait, WAIT_S)
    assert gw.gateway.runtime.queue_depth == 0  # both in the held batch, none queued
    assert not first.done()

    store.fail_next = StorageError("injected: the commit fails")
    with captured_log(monkeypatch, mainloop) as logs:
        store.release()
        assert_nothing_applied(await asyncio.wait_for(first, WAIT_S), "dup")
    # The operator's log says why, and how many operations were applied in the lost batch.
    assert [entry for entry in logs if entry["event"] == "ledger_commit_failed"] == [
        {
            "event": "ledger_commit_failed",
            "error": "injected: the commit fails",
            "operations": 1,
            "log_level": "error",
        }
    ]
    # Both answers are written in the same turn, before this HealthCheck is read: the retry's,
    # under the same extID, is filed by the client as an orphan.
    await client.ok("HealthCheck")
    [retry_answer] = client.orphans
    assert_nothing_applied(retry_answer, "dup")
    assert gw.gateway.waiters.pending_count() == 0

    client.responses.pop("dup")
    record = await client.ok(command, data, ext_id="dup")
    assert record["login"] == LOGIN
    assert (await client.ok("GetAccountByLogin", {"login": LOGIN}))["credit"] == 9.0
    listed = await client.ok("MngGetTradesByFilter", {"login": LOGIN})
    assert listed["count"] == 1
