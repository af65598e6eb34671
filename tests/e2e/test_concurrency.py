"""Many clients at once: every Sync request gets its own record, and nothing leaks."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from manager_gateway.ledger.verify import verify_ledger

from ..conftest import Client, GatewayFactory, Harness, poll_rounds, wait_until
from ..fakes import GatedLedger, storage_of

CONNECTIONS = 20
PER_CONNECTION = 10
ACCOUNTS = 20
FIRST_LOGIN = 3001


async def quiet_client(gw: Harness) -> Client:
    """A client that only wants its own answers (no pushed events)."""
    client = await gw.client()
    await client.ok("Unsubscribe", {"chanels": ["trade:event", "balance:event"]})
    return client


async def test_200_concurrent_sync_credits_each_get_their_own_record(gw: Harness) -> None:
    """200 pipelined CreditInSync over 20 connections: own records, exact sums, clean ledger."""
    admin = await quiet_client(gw)
    logins = [FIRST_LOGIN + n for n in range(ACCOUNTS)]
    for login in logins:
        await gw.add_user(admin, login)
    clients = [await quiet_client(gw) for _ in range(CONNECTIONS)]

    sent: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
    for c, client in enumerate(clients):
        for i in range(PER_CONNECTION):
            n = c * PER_CONNECTION + i
            data: dict[str, Any] = {
                "login": logins[(c + i) % ACCOUNTS],
                "amount": float(Decimal(n + 1) + Decimal("0.25")),
                "comment": f"conn {c} request {i}",
            }
            # Explicit extIDs: every client shares one token subject, so they must not collide.
            future = client.send("CreditInSync", data, ext_id=f"conc-{c}-{i}")
            sent.append((data, future))
    answers = await asyncio.wait_for(asyncio.gather(*(future for _, future in sent)), 30)

    orders = set()
    expected: dict[int, Decimal] = dict.fromkeys(logins, Decimal(0))
    for (data, _), answer in zip(sent, answers, strict=True):
        assert answer["status"] == 200, answer
        record = answer["data"]
        assert (record["login"], record["profit"], record["comment"]) == (
            data["login"],
            data["amount"],
            data["comment"],
        )
        assert (record["cmd"], record["state"]) == (7, 3)
        orders.add(record["order"])
        expected[data["login"]] += Decimal(str(data["amount"]))
    assert len(orders) == CONNECTIONS * PER_CONNECTION

    rows = (await admin.ok("GetUserBalanceList", {"logins": logins}))["rows"]
    assert {row["login"]: row["credit"] for row in rows} == {
        login: float(total) for login, total in expected.items()
    }
    assert {row["login"]: row["balance"] for row in rows} == dict.fromkeys(logins, 0.0)
    for login in logins:
        found = await admin.ok("MngGetTradesByFilter", {"login": login})
        assert found["count"] == PER_CONNECTION

    problems, _ = verify_ledger(gw.data_dir)
    assert problems == []
    assert gw.gateway.waiters.pending_count() == 0
    for client in clients:
        assert client.orphans == []


async def test_closed_session_pending_sync_operations_still_complete(
    make_gateway: GatewayFactory,
) -> None:
    """A session closing with Sync requests pending: the operations still complete, no leaks."""
    gw = await make_gateway(gated=True)
    observer = await quiet_client(gw)
    await gw.add_user(observer, 4001)
    leaving = await quiet_client(gw)
    waiters = gw.gateway.waiters

    storage = storage_of(gw.gateway.ledger)
    assert isinstance(storage, GatedLedger)
    storage.hold()
    amounts = [10.5, 20.25, 30.0, 40.75, 50.0]
    for n, amount in enumerate(amounts):
        leaving.send(
            "CreditInSync",
            {"login": 4001, "amount": amount, "comment": f"gone {n}"},
            ext_id=f"gone-{n}",
        )
    await wait_until(observer, lambda: waiters.pending_count() == len(amounts))

    await leaving.close()
    await wait_until(observer, lambda: waiters.pending_count() == 0)
    storage.release()

    async def credit() -> float:
        account = await observer.ok("GetAccountByLogin", {"login": 4001})
        return float(account["credit"])

    for _ in poll_rounds():
        if await credit() == sum(amounts):
            break
    assert await credit() == sum(amounts)

    found = await observer.ok("MngGetTradesByFilter", {"login": 4001})
    assert found["count"] == len(amounts)
    assert sorted(row["comment"] for row in found["rows"]) == [
        f"gone {n}" for n in range(len(amounts))
    ]
    for row in found["rows"]:
        assert await observer.ok("GetTradeByOrder", {"order": row["order"]}) == row
    assert waiters.pending_count() == 0
    assert waiters.bound_count() == 0
    assert verify_ledger(gw.data_dir)[0] == []
