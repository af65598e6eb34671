"""A full disk: the gateway refuses what it cannot write, with a clear error, changes nothing,
keeps answering reads, and recovers by itself once there is room again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from manager_gateway.ledger.verify import verify_ledger

from ..conftest import DEMO_USER, Client, GatewayFactory
from ..fakes import FillableLedger

FILL_ATTEMPTS = 5000  # credits at most before the capped database runs out of pages


def assert_refused_cleanly(answer: dict[str, Any]) -> None:
    assert (answer["status"], answer["error"]) == (500, "INTERNAL_ERROR"), answer
    assert "nothing was applied" in answer["message"]


async def credit_of(client: Client) -> float:
    return float((await client.ok("GetAccountByLogin", {"login": 1001}))["credit"])


async def test_full_disk_refuses_writes_cleanly_and_recovers(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Once the ledger cannot grow, the credit that needs a new page, a Sync credit and an
    AddUser are answered 500 at once; nothing of them is applied and no idempotency key is kept;
    reads still answer. With room again, the very same requests succeed and the ledger
    verifies."""
    storage = FillableLedger(tmp_path / "data")
    gw = await make_gateway(storage=storage, data_dir=tmp_path / "data")
    client = await gw.client()
    await gw.add_user(client, 1001)
    storage.fill()

    applied = 0.0
    for n in range(FILL_ATTEMPTS):
        data = {"login": 1001, "amount": 1.0, "comment": f"fill {n}"}
        answer = await client.request("CreditIn", data, ext_id=f"fill-{n}")
        if answer["status"] != 200:
            break
        applied += 1.0
    else:
        raise AssertionError("the capped ledger never ran out of room")
    assert_refused_cleanly(answer)
    full_credit = (f"fill-{n}", data)
    assert await credit_of(client) == applied

    sync_credit = {"login": 1001, "amount": 40.0, "comment": "bonus"}
    assert_refused_cleanly(await client.request("CreditInSync", sync_credit, ext_id="full-sync"))
    new_user = {**DEMO_USER, "login": 1002}
    assert_refused_cleanly(await client.request("AddUser", new_user, ext_id="full-user"))
    assert await credit_of(client) == applied
    assert (await client.request("GetAccountByLogin", {"login": 1002}))["status"] == 404
    assert gw.gateway.waiters.pending_count() == 0

    storage.make_room()
    ext_id, data = full_credit
    assert (await client.ok("CreditIn", data, ext_id=ext_id))["amount"] == 1.0
    assert (await client.ok("CreditInSync", sync_credit, ext_id="full-sync"))["profit"] == 40.0
    assert (await client.ok("AddUser", new_user, ext_id="full-user"))["login"] == 1002
    assert await credit_of(client) == applied + 41.0
    assert verify_ledger(gw.data_dir)[0] == []
