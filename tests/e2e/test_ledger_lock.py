"""A ledger write-locked by another process: commits wait `ledger_busy_timeout_ms`, then fail
cleanly, and the gateway recovers once the lock is gone."""

from __future__ import annotations

import sqlite3

from manager_gateway.ledger.sqlite import LEDGER_FILE

from ..conftest import GatewayFactory, money


async def test_foreign_write_lock_fails_commits_cleanly_then_recovers(
    make_gateway: GatewayFactory,
) -> None:
    """While another process holds the write lock, a credit is answered 500 with nothing
    applied; after the lock is released the same request succeeds."""
    gw = await make_gateway(ledger_busy_timeout_ms=50)
    client = await gw.client()
    await gw.add_user(client, 1001)
    holder = sqlite3.connect(gw.data_dir / LEDGER_FILE, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        data = {"login": 1001, "amount": 25.0, "comment": "bonus"}
        refused = await client.request("CreditIn", data, ext_id="locked-1")
        assert refused["status"] == 500, refused
        account = await client.ok("GetAccountByLogin", {"login": 1001})
        assert {k: account[k] for k in ("balance", "credit")} == {"balance": 0.0, "credit": 0.0}
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    accepted = await client.ok("CreditIn", data, ext_id="locked-1")  # a failed commit keeps no key
    assert accepted["amount"] == 25.0
    account = await client.ok("GetAccountByLogin", {"login": 1001})
    assert {k: account[k] for k in money(1001, 0.0, 25.0)} == money(1001, 0.0, 25.0)
