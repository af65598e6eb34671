"""The shortest paths through the gateway: create an account, credit it with a Sync command."""

from __future__ import annotations

import asyncio

import orjson

from ..conftest import DEMO_USER, Harness


async def test_credit_in_sync_answers_with_the_trade_event_data(gw: Harness) -> None:
    """CreditInSync answers with the record that trade:event carried, after durable commit."""
    client = await gw.client()
    await gw.add_user(client, 1001)
    record = await client.ok(
        "CreditInSync", {"login": 1001, "amount": 300.0, "comment": "Promotion credit"}
    )
    assert record["login"] == 1001 and record["cmd"] == 7 and record["state"] == 3
    assert record["profit"] == 300.0
    event = await client.next_event()
    assert event["event"] == "trade:event" and event["type"] == 0 and event["data"] == record
    account = await client.ok("GetAccountByLogin", {"login": 1001})
    assert account["credit"] == 300.0
    assert gw.gateway.waiters.pending_count() == 0


async def test_state_changes_pipelined_on_one_connection_apply_in_arrival_order(
    gw: Harness,
) -> None:
    """AddUser (slow: it hashes a password) then a credit and a withdrawal pipelined in one write
    reach the main loop in that order, so the credit finds the account and the withdrawal the
    credit's money."""
    client = await gw.client()
    frames = [
        {
            "command": "AddUser",
            "extID": "p-user",
            "__token": client.token,
            "data": {**DEMO_USER, "login": 2001},
        },
        {
            "command": "BalanceInSync",
            "extID": "p-in",
            "data": {"login": 2001, "amount": 50, "comment": "deposit"},
        },
        {
            "command": "BalanceOutSync",
            "extID": "p-out",
            "data": {"login": 2001, "amount": -20, "comment": "withdrawal"},
        },
    ]
    futures = [client.expect(frame["extID"]) for frame in frames]
    client.send_raw(b"".join(orjson.dumps(frame) + b"\r\n" for frame in frames))
    user, deposit, withdrawal = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert user["status"] == 200 and user["data"]["login"] == 2001
    assert (deposit["status"], deposit["data"]["profit"]) == (200, 50.0)
    assert (withdrawal["status"], withdrawal["data"]["profit"]) == (200, -20.0)
    assert withdrawal["data"]["order"] == deposit["data"]["order"] + 1
    assert (await client.ok("GetAccountByLogin", {"login": 2001}))["balance"] == 30.0
