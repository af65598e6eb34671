"""The shortest path through the gateway: create an account, credit it with a Sync command."""

from __future__ import annotations

from ..conftest import Harness


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
