"""The main loop's batches and its start, as an operator sees them: `max_batch` bounds what one
commit takes, and the start line counts what the ledger handed back."""

from __future__ import annotations

import asyncio

import pytest

from manager_gateway.runtime import mainloop

from ..conftest import GatewayFactory, captured_log, ledger, wait_until

WAIT_S = 10


async def test_a_queue_longer_than_max_batch_is_committed_max_batch_at_a_time(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway(gated=True, max_batch=3)
    client, probe = await gw.client(), await gw.client()
    await gw.add_user(client, 1001)
    store = ledger(gw)
    store.commit_started.clear()
    store.hold()  # one operation held in its commit, seven queued behind it
    blocker = client.send("BalanceIn", {"login": 1001, "amount": 1.0})
    assert await asyncio.to_thread(store.commit_started.wait, WAIT_S)
    queued = [client.send("BalanceIn", {"login": 1001, "amount": 1.0}) for _ in range(7)]
    await wait_until(probe, lambda: gw.gateway.runtime.queue_depth == 7)
    with captured_log(monkeypatch, mainloop) as logs:
        store.release()
        answers = [await asyncio.wait_for(f, WAIT_S) for f in (blocker, *queued)]
    assert [answer["status"] for answer in answers] == [200] * 8
    sizes = [entry["operations"] for entry in logs if entry["event"] == "batch_committed"]
    assert sizes == [1, 3, 3, 1]
    assert (await client.ok("GetAccountByLogin", {"login": 1001}))["balance"] == 8.0


async def test_the_start_line_counts_what_the_ledger_handed_back(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await make_gateway()
    client = await first.client()
    for login in (1001, 1002):
        await first.add_user(client, login)
    for amount in (1, 2, 3):
        await client.ok("BalanceIn", {"login": 1001, "amount": amount})
    await first.close_clients()
    await first.gateway.shutdown()
    with captured_log(monkeypatch, mainloop) as logs:
        await make_gateway(data_dir=first.data_dir)
    [started] = [entry for entry in logs if entry["event"] == "main_loop_started"]
    assert started == {
        "event": "main_loop_started",
        "log_level": "info",
        "accounts": 2,
        "records": 3,
        "idempotency_keys": 5,  # two AddUser and three BalanceIn
        "next_order": 4,
    }
