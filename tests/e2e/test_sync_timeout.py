"""docs/protocol.md section 6: Sync timeouts, main-loop rejections and failed commits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from manager_gateway.ledger.verify import verify_ledger

from ..conftest import DEMO_USER, Client, GatewayFactory, ledger, wait_until
from ..fakes import FakeClock

LOGIN = 6001
BARRIER = 6002  # an account whose Sync credit orders a test after the main loop's earlier batches
CREDIT = {"login": LOGIN, "amount": 300.0, "comment": "Promotion credit"}


async def setup_account(client: Client, balance: float = 0.0) -> None:
    await client.ok("AddUser", {**DEMO_USER, "login": LOGIN}, ext_id="add-account")
    if balance:
        await client.ok("BalanceIn", {"login": LOGIN, "amount": balance}, ext_id="seed")


async def money(client: Client) -> tuple[float, float]:
    account = await client.ok("GetAccountByLogin", {"login": LOGIN})
    return account["balance"], account["credit"]


async def trades(client: Client) -> list[dict[str, Any]]:
    found = await client.ok("MngGetTradesByFilter", {"login": LOGIN})
    assert found["count"] == len(found["rows"])
    return list(found["rows"])


async def test_stalled_main_loop_answers_504_and_still_applies(
    make_gateway: GatewayFactory,
) -> None:
    """A held ledger: 504 SYNC_TIMEOUT with the reserved order; the operation lands on release."""
    gw = await make_gateway(sync_timeout_ms=300, gated=True)
    client, probe = await gw.client(), await gw.client()
    await setup_account(probe)
    ledger(gw).hold()
    answer = await client.request("CreditInSync", CREDIT, ext_id="stalled-1")
    assert answer.keys() == {"extID", "status", "error", "message", "data"}
    assert (answer["extID"], answer["status"], answer["error"]) == (
        "stalled-1",
        504,
        "SYNC_TIMEOUT",
    )
    order = answer["data"]["order"]
    assert answer["data"] == {"order": order} and isinstance(order, int)
    missing = await probe.request("GetTradeByOrder", {"order": order})
    assert (missing["status"], missing["error"]) == (404, "TRADE_NOT_FOUND")
    assert await money(probe) == (0.0, 0.0)
    assert gw.gateway.waiters.pending_count() == 0

    ledger(gw).release()
    await wait_until(probe, lambda: gw.gateway.runtime.state.record(order) is not None)
    record = await probe.ok("GetTradeByOrder", {"order": order})
    assert (record["order"], record["login"], record["cmd"], record["state"]) == (
        order,
        LOGIN,
        7,
        3,
    )
    assert (record["profit"], record["comment"]) == (300.0, "Promotion credit")
    assert await money(probe) == (0.0, 300.0)
    assert await trades(probe) == [record]
    assert gw.gateway.waiters.pending_count() == 0
    assert gw.gateway.waiters.bound_count() == 0
    assert client.orphans == []


async def test_main_loop_rejection_is_answered_at_once(make_gateway: GatewayFactory) -> None:
    """NOT_ENOUGH_MONEY comes back without the sync timeout ever firing (a manual clock)."""
    clock = FakeClock(wall=time.time())
    gw = await make_gateway(sync_timeout_ms=300, clock=clock)
    client = await gw.client()
    await setup_account(client, balance=50.0)
    answer = await client.request(
        "BalanceOutSync", {"login": LOGIN, "amount": -50.01}, ext_id="too-much"
    )
    assert (answer["extID"], answer["status"], answer["error"]) == (
        "too-much",
        400,
        "NOT_ENOUGH_MONEY",
    )
    assert "data" not in answer
    assert clock.now == 0.0  # time never moved: the answer did not come from the timer
    credit = await client.request(
        "CreditOutSync", {"login": LOGIN, "amount": -1.0, "comment": "x"}, ext_id="no-credit"
    )
    assert (credit["status"], credit["error"]) == (400, "NOT_ENOUGH_CREDIT")
    assert await money(client) == (50.0, 0.0)
    assert len(await trades(client)) == 1
    assert gw.gateway.waiters.pending_count() == 0
    assert gw.gateway.waiters.bound_count() == 0


async def test_failed_commit_answers_500_and_changes_nothing(
    make_gateway: GatewayFactory,
) -> None:
    """A commit failing with OSError: 500, nothing applied, no key kept, the gateway serves on."""
    gw = await make_gateway(gated=True)
    client, other = await gw.client(), await gw.client()
    await setup_account(client, balance=20.0)
    before_money, before_trades = await money(client), await trades(client)

    ledger(gw).fail_next = OSError("disk full")
    failed = await client.request("CreditInSync", CREDIT, ext_id="doomed-1")
    assert (failed["extID"], failed["status"], failed["error"]) == (
        "doomed-1",
        500,
        "INTERNAL_ERROR",
    )
    assert "disk full" not in failed["message"]
    assert await money(client) == before_money
    assert await trades(client) == before_trades
    assert gw.gateway.waiters.pending_count() == 0

    ledger(gw).fail_next = OSError("disk full")
    failed_async = await client.request(
        "BalanceIn", {"login": LOGIN, "amount": 5.0}, ext_id="doomed-2"
    )
    assert (failed_async["status"], failed_async["error"]) == (500, "INTERNAL_ERROR")
    assert await money(client) == before_money

    assert (await other.ok("HealthCheck"))["status"] == "ok"
    client.responses.pop("doomed-1")  # the harness would hand back the stored first answer
    record = await client.ok("CreditInSync", CREDIT, ext_id="doomed-1")
    assert (record["login"], record["profit"], record["comment"]) == (
        LOGIN,
        300.0,
        "Promotion credit",
    )
    assert await other.ok("GetTradeByOrder", {"order": record["order"]}) == record
    client.responses.pop("doomed-2")
    ack = await client.ok("BalanceIn", {"login": LOGIN, "amount": 5.0}, ext_id="doomed-2")
    assert (ack["login"], ack["amount"], ack["state"]) == (LOGIN, 5.0, 10)
    assert await money(other) == (25.0, 300.0)
    assert len(await trades(other)) == 3
    assert verify_ledger(gw.data_dir)[0] == []
    assert gw.gateway.waiters.pending_count() == 0


async def test_timeouts_under_a_stall_leave_nothing_pending(make_gateway: GatewayFactory) -> None:
    """Several Sync requests time out during one stall; all apply afterwards, nothing leaks."""
    gw = await make_gateway(sync_timeout_ms=300, gated=True)
    client, probe = await gw.client(), await gw.client()
    await setup_account(probe)
    await probe.ok("AddUser", {**DEMO_USER, "login": BARRIER}, ext_id="add-barrier")
    ledger(gw).hold()
    futures = [
        client.send("CreditInSync", {**CREDIT, "amount": float(n + 1)}, ext_id=f"stall-{n}")
        for n in range(5)
    ]
    answers = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert [answer["error"] for answer in answers] == ["SYNC_TIMEOUT"] * 5
    # Only operations the main loop reached before the stall have an order reserved.
    orders = [answer["data"]["order"] for answer in answers if "data" in answer]
    assert len(set(orders)) == len(orders) >= 1
    ledger(gw).release()
    runtime = gw.gateway.runtime
    # A Sync credit queued after the five is answered only once its batch is committed, and the
    # main loop commits in order: then the five are in too.
    await probe.ok("CreditInSync", {"login": BARRIER, "amount": 1.0, "comment": "barrier"})
    assert runtime.state.record_count == 5 + 1
    for order in orders:
        assert (await probe.ok("GetTradeByOrder", {"order": order}))["order"] == order
    assert await money(probe) == (0.0, 15.0)
    assert gw.gateway.waiters.pending_count() == 0
    assert gw.gateway.waiters.bound_count() == 0
