"""Shutdown of an in-process gateway: what is refused while it drains, and what a drain that gives
up on a hung ledger answers (docs/protocol.md section 9).

A `GatedLedger` holds a commit open, so the drain stays open exactly as long as a test looks at
it; the only wall-clock wait is the `shutdown_timeout_s` that is itself under test.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.verify import verify_ledger
from manager_gateway.runtime import mainloop

from ..conftest import GatewayFactory, Harness, captured_log, ledger, wait_until

WAIT_S = 10  # bound on waiting for the ledger thread to reach the held commit
SHORT_SHUTDOWN_S = 0.2  # the drain's bound when a test lets it expire
SHUTTING_DOWN = {"status": 503, "error": "SHUTTING_DOWN", "message": "server is shutting down"}


def ledger_comments(data_dir: Path) -> list[str]:
    """The comments of every record version in the ledger, read as another process would."""
    db = sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT comment FROM records ORDER BY ord, version")]
    finally:
        db.close()


async def hold_a_commit(gw: Harness, login: int, ext_id: str) -> asyncio.Future[dict[str, Any]]:
    """A credit (commented `ext_id`) whose commit is held in the ledger thread; its answer."""
    store = ledger(gw)
    store.commit_started.clear()
    store.hold()
    client = gw.clients[0]
    data = {"login": login, "amount": 1.0, "comment": ext_id}
    pending = client.send("CreditIn", data, ext_id=ext_id)
    assert await asyncio.to_thread(store.commit_started.wait, WAIT_S)
    return pending


async def start_shutdown(gw: Harness) -> asyncio.Task[None]:
    """`shutdown()` as a task, started: it sets `draining` and closes the listener before its
    first await, and the task's first step runs before this coroutine resumes."""
    task = asyncio.create_task(gw.gateway.shutdown())
    await asyncio.sleep(0)
    assert gw.gateway.draining
    return task


async def test_draining_refuses_new_requests_and_connections(make_gateway: GatewayFactory) -> None:
    """While the gateway drains (a commit in flight): a request on an open connection, a
    HealthCheck included, is answered 503 SHUTTING_DOWN and applies nothing; a new connection
    is refused; the request in flight is still answered 200 and is in the ledger."""
    gw = await make_gateway(gated=True)
    client = await gw.client()
    await gw.add_user(client, 1001)
    in_flight = await hold_a_commit(gw, 1001, "in-flight")
    drain = await start_shutdown(gw)

    late = await client.request(
        "CreditIn", {"login": 1001, "amount": 5.0, "comment": "late"}, ext_id="late"
    )
    assert late == {"extID": "late", **SHUTTING_DOWN}
    health = await client.request("HealthCheck", ext_id="late-health")
    assert health == {"extID": "late-health", **SHUTTING_DOWN}
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    except ConnectionRefusedError:
        pass
    else:
        writer.close()
        raise AssertionError("a connection was accepted while draining")
    assert not in_flight.done()

    ledger(gw).release()
    await asyncio.wait_for(drain, WAIT_S)
    answer = await asyncio.wait_for(in_flight, WAIT_S)
    assert answer["status"] == 200
    await asyncio.wait_for(client.closed.wait(), WAIT_S)
    assert gw.gateway.ledger_finished
    assert ledger_comments(gw.data_dir) == ["in-flight"]
    assert verify_ledger(gw.data_dir)[0] == []


async def test_timed_out_shutdown_answers_the_held_batch_and_the_queue_503(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that never finishes and operations queued behind it (async and Sync, on two
    connections): once shutdown_timeout_s has passed, the held batch and every queued operation
    are answered 503 SHUTTING_DOWN before the connections close, and a read held behind a
    queued write is answered from the committed state."""
    gw = await make_gateway(gated=True, shutdown_timeout_s=SHORT_SHUTDOWN_S)
    writer, other, probe = await gw.client(), await gw.client(), await gw.client()
    for login in (1001, 1002):
        await gw.add_user(writer, login)
    held = await hold_a_commit(gw, 1001, "held")
    queued = {
        "q-async-1": writer.send("BalanceIn", {"login": 1001, "amount": 2.0}, ext_id="q-async-1"),
        "q-async-2": other.send(
            "CreditIn", {"login": 1002, "amount": 3.0, "comment": "q"}, ext_id="q-async-2"
        ),
        "q-sync": other.send("BalanceInSync", {"login": 1002, "amount": 4.0}, ext_id="q-sync"),
    }
    read = writer.send("GetAccountByLogin", {"login": 1001}, ext_id="read-behind")
    await wait_until(probe, lambda: gw.gateway.runtime.queue_depth == len(queued))
    assert not read.done()  # held behind the queued write on its connection

    with captured_log(monkeypatch, mainloop) as logs:
        await asyncio.wait_for(gw.gateway.shutdown(), WAIT_S)
    assert not gw.gateway.ledger_finished
    assert [entry for entry in logs if entry["event"] == "ledger_abandoned"] == [
        {
            "event": "ledger_abandoned",
            "timeout_s": SHORT_SHUTDOWN_S,
            "queued": len(queued),
            "log_level": "error",
        }
    ]
    for client in (writer, other):
        await asyncio.wait_for(client.closed.wait(), WAIT_S)
    assert held.done(), "the batch held in its commit was never answered"
    assert held.result() == {"extID": "held", **SHUTTING_DOWN}
    for ext_id, future in queued.items():
        assert future.done(), f"{ext_id} was never answered"
        assert future.result() == {"extID": ext_id, **SHUTTING_DOWN}
    assert read.done(), "the read held behind a queued write was never answered"
    account = read.result()
    assert account["status"] == 200, account
    assert (account["data"]["balance"], account["data"]["credit"]) == (0.0, 0.0)
    assert writer.orphans == [] and other.orphans == []


async def test_a_clean_shutdown_leaves_the_ledger_as_one_file(make_gateway: GatewayFactory) -> None:
    """Every connection to the ledger, the history readers' included, is closed: SQLite then
    folds its write-ahead log into the file and deletes it, so a copy of the one file is a
    whole backup."""
    gw = await make_gateway()
    client = await gw.client()
    await gw.add_user(client, 5001)
    await client.ok("BalanceInSync", {"login": 5001, "amount": 10})
    assert (await client.ok("MngGetTradesByFilter", {}))["count"] == 1  # a reader's connection
    assert (gw.data_dir / f"{LEDGER_FILE}-wal").exists()  # while it serves
    await gw.close_clients()
    await gw.gateway.shutdown()
    ledger_files = sorted(p.name for p in gw.data_dir.iterdir() if p.name.startswith(LEDGER_FILE))
    assert ledger_files == [LEDGER_FILE]
    assert ledger_comments(gw.data_dir) == ["Finance"]  # and it reads back whole
