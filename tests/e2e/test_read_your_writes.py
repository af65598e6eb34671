"""A connection reads its own writes, over real TCP (docs/protocol.md, "Read your writes").

A read pipelined behind a write on the same connection is answered once that write is decided,
from a state that includes it. Holding is observed without sleeping: the ledger's commits are
held (`GatedLedger`), and a HealthCheck sent after the read is answered at once, so once its
answer is in, an unanswered read was held (the gateway writes in order per connection).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import orjson
import pytest

from manager_gateway.server.connection import Connection

from ..conftest import DEMO_USER, Client, GatewayFactory, Harness, ledger, wait_until

LOGIN = 1001
READS = (
    "GetAccountByLogin",
    "GetUserBalanceList",
    "GetTradeByOrder",
    "MngGetTradesByFilter",
    "GetGroups",
)


def frame(command: str, data: dict[str, Any], ext_id: str, token: str | None) -> bytes:
    request = {"command": command, "extID": ext_id, "data": data, "__token": token}
    return orjson.dumps(request) + b"\r\n"


def pipeline(client: Client, *requests: tuple[str, dict[str, Any]]) -> list[asyncio.Future[Any]]:
    """Write every request in one write; the futures of their answers, in request order."""
    ext_ids = [client.next_ext_id() for _ in requests]
    futures = [client.expect(ext_id) for ext_id in ext_ids]
    client.send_raw(
        b"".join(
            frame(cmd, data, ext_id, client.token)
            for (cmd, data), ext_id in zip(requests, ext_ids, strict=True)
        )
    )
    return futures


def read_requests(order: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("GetAccountByLogin", {"login": LOGIN}),
        ("GetUserBalanceList", {"logins": [LOGIN]}),
        ("GetTradeByOrder", {"order": order}),
        ("MngGetTradesByFilter", {"login": LOGIN}),
        ("GetGroups", {}),
    ]


async def answers(futures: list[asyncio.Future[Any]]) -> list[dict[str, Any]]:
    return list(await asyncio.wait_for(asyncio.gather(*futures), 10))


async def world(h: Harness) -> tuple[Client, int]:
    """Account 1001 with balance 100 and credit 50 (orders 1 and 2); a bound client."""
    client = await h.client()
    await h.add_user(client, LOGIN)
    await client.ok("BalanceIn", {"login": LOGIN, "amount": 100})
    await client.ok("CreditIn", {"login": LOGIN, "amount": 50, "comment": "c"})
    return client, 2


# Each write, what the account's (balance, credit) becomes, and whether it makes a record
# (the next order) or changes record 1 or 2.
WRITES: list[tuple[str, dict[str, Any], tuple[float, float], int | None]] = [
    ("BalanceIn", {"login": LOGIN, "amount": 5}, (105.0, 50.0), None),
    ("BalanceInSync", {"login": LOGIN, "amount": 5}, (105.0, 50.0), None),
    ("BalanceOut", {"login": LOGIN, "amount": -5}, (95.0, 50.0), None),
    ("BalanceOutSync", {"login": LOGIN, "amount": -5}, (95.0, 50.0), None),
    ("CreditIn", {"login": LOGIN, "amount": 5, "comment": "c"}, (100.0, 55.0), None),
    ("CreditInSync", {"login": LOGIN, "amount": 5, "comment": "c"}, (100.0, 55.0), None),
    ("CreditOut", {"login": LOGIN, "amount": -5, "comment": "c"}, (100.0, 45.0), None),
    ("CreditOutSync", {"login": LOGIN, "amount": -5, "comment": "c"}, (100.0, 45.0), None),
    ("BalanceIn", {"login": LOGIN, "amount": 70, "order": 1}, (70.0, 50.0), 1),
    ("DeleteBalance", {"order": 1}, (0.0, 50.0), 1),
    ("DeleteBalanceSync", {"order": 1}, (0.0, 50.0), 1),
    ("DeleteCredit", {"order": 2}, (100.0, 0.0), 2),
    ("DeleteCreditSync", {"order": 2}, (100.0, 0.0), 2),
]


@pytest.mark.parametrize(
    ("command", "data", "money", "changes"),
    WRITES,
    ids=[f"{write[0]}-{index}" for index, write in enumerate(WRITES)],
)
async def test_every_read_sees_the_write_before_it(
    make_gateway: GatewayFactory,
    command: str,
    data: dict[str, Any],
    money: tuple[float, float],
    changes: int | None,
) -> None:
    """Each finance write, then every read, in one pipelined write: the reads are held while the
    write's commit is held, then answer from a state that includes it."""
    h = await make_gateway(gated=True)
    client, last_order = await world(h)
    order = changes or last_order + 1
    ledger(h).hold()
    futures = pipeline(client, (command, data), *read_requests(order))
    await client.ok("HealthCheck")
    assert not any(future.done() for future in futures)
    ledger(h).release()
    write, account, balances, trade, trades, groups = await answers(futures)
    assert write["status"] == 200, write
    assert (account["data"]["balance"], account["data"]["credit"]) == money
    [row] = balances["data"]["rows"]
    assert (row["balance"], row["credit"]) == money
    assert trade["status"] == 200, trade
    assert trade["data"]["order"] == order
    assert trade["data"]["state"] == (6 if command.startswith("Delete") else 3)
    assert trades["data"]["count"] == (last_order if changes else last_order + 1)
    assert trades["data"]["rows"][0] == (trade["data"] if order > 1 else trades["data"]["rows"][0])
    assert groups["data"]["count"] == 1


async def test_reads_see_an_account_added_before_them(make_gateway: GatewayFactory) -> None:
    """AddUser then every read of that account, pipelined: none of them is USER_NOT_FOUND."""
    h = await make_gateway()
    client = await h.client()
    add = ("AddUser", {**DEMO_USER, "login": LOGIN})
    credit = ("CreditIn", {"login": LOGIN, "amount": 3, "comment": "c"})
    futures = pipeline(client, add, credit, *read_requests(1))
    add_answer, credit_answer, account, balances, trade, trades, groups = await answers(futures)
    assert add_answer["data"]["login"] == LOGIN
    assert credit_answer["data"]["order"] == 1
    assert account["data"]["credit"] == 3.0
    assert [row["login"] for row in balances["data"]["rows"]] == [LOGIN]
    assert trade["data"]["profit"] == 3.0
    assert trades["data"]["count"] == 1
    assert groups["status"] == 200


REFUSED = [
    ("BalanceOut", {"login": LOGIN, "amount": -1000}, "NOT_ENOUGH_MONEY"),
    ("CreditOutSync", {"login": LOGIN, "amount": -1000, "comment": "c"}, "NOT_ENOUGH_CREDIT"),
    ("DeleteCredit", {"order": 1}, "INVALID_DATA"),
    ("DeleteBalanceSync", {"order": 99}, "TRADE_NOT_FOUND"),
    ("BalanceIn", {"login": 4242, "amount": 1}, "USER_NOT_FOUND"),
    ("AddUser", {**DEMO_USER, "login": LOGIN}, "USER_EXISTS"),
    ("AddUser", {**DEMO_USER, "group": "nope"}, "GROUP_NOT_FOUND"),
]


@pytest.mark.parametrize(("command", "data", "error"), REFUSED, ids=[r[2] for r in REFUSED])
async def test_a_refused_write_releases_the_reads_behind_it(
    make_gateway: GatewayFactory, command: str, data: dict[str, Any], error: str
) -> None:
    """A write the main loop refuses is decided without a commit: the reads behind it answer
    (after its refusal, from the unchanged state) while the ledger is still held."""
    h = await make_gateway(gated=True)
    client, last_order = await world(h)
    ledger(h).hold()
    futures = pipeline(client, (command, data), *read_requests(1))
    refused, account, balances, trade, trades, _groups = await answers(futures)
    assert refused["error"] == error, refused
    assert (account["data"]["balance"], account["data"]["credit"]) == (100.0, 50.0)
    assert balances["data"]["rows"][0]["balance"] == 100.0
    assert trade["data"]["state"] == 3
    assert trades["data"]["count"] == last_order
    ledger(h).release()


async def test_reads_wait_for_every_earlier_write(make_gateway: GatewayFactory) -> None:
    """A read behind several writes, one refused and the others held in a commit, waits for
    all of them, not only the last; a read before them does not wait."""
    h = await make_gateway(gated=True)
    client, _ = await world(h)
    ledger(h).hold()
    futures = pipeline(
        client,
        ("GetAccountByLogin", {"login": LOGIN}),
        ("BalanceIn", {"login": LOGIN, "amount": 1}),
        ("BalanceIn", {"login": LOGIN, "amount": 2}),
        ("BalanceOut", {"login": LOGIN, "amount": -10_000}),
        ("GetAccountByLogin", {"login": LOGIN}),
    )
    before = await asyncio.wait_for(futures[0], 10)
    assert before["data"]["balance"] == 100.0
    refusal = await asyncio.wait_for(futures[3], 10)
    assert refusal["error"] == "NOT_ENOUGH_MONEY"
    await client.ok("HealthCheck")
    assert not futures[4].done()
    ledger(h).release()
    after = await asyncio.wait_for(futures[4], 10)
    assert after["data"]["balance"] == 103.0


async def test_reads_never_wait_for_another_connections_writes(
    make_gateway: GatewayFactory,
) -> None:
    """While one connection's write is held in a commit, another connection's reads answer at
    once, from the committed state."""
    h = await make_gateway(gated=True)
    writer, _ = await world(h)
    reader = await h.client()
    ledger(h).hold()
    pending = writer.send("BalanceInSync", {"login": LOGIN, "amount": 1})
    await asyncio.wait_for(asyncio.to_thread(ledger(h).commit_started.wait), 10)
    for command, data in read_requests(1):
        assert (await reader.request(command, data))["status"] == 200
    assert (await reader.ok("GetAccountByLogin", {"login": LOGIN}))["balance"] == 100.0
    assert not pending.done()
    ledger(h).release()
    assert (await asyncio.wait_for(pending, 10))["status"] == 200


async def test_a_sync_timeout_still_holds_the_reads_behind_it(
    make_gateway: GatewayFactory,
) -> None:
    """A Sync write answered 504 is not decided yet: a read behind it waits for its commit, and
    then sees it."""
    h = await make_gateway(gated=True, sync_timeout_ms=100)
    client, _ = await world(h)
    ledger(h).hold()
    sync, read = pipeline(
        client,
        ("CreditInSync", {"login": LOGIN, "amount": 9, "comment": "late"}),
        ("GetAccountByLogin", {"login": LOGIN}),
    )
    timeout = await asyncio.wait_for(sync, 10)
    assert (timeout["status"], timeout["error"]) == (504, "SYNC_TIMEOUT")
    await client.ok("HealthCheck")
    assert not read.done()
    ledger(h).release()
    assert (await asyncio.wait_for(read, 10))["data"]["credit"] == 59.0


async def test_held_reads_count_towards_max_inflight(make_gateway: GatewayFactory) -> None:
    """Held reads are pending requests: past max_inflight the next read is 429 at once; reads on
    other connections and HealthCheck are not affected."""
    h = await make_gateway(gated=True, max_inflight=3)
    client, _ = await world(h)
    other = await h.client()
    ledger(h).hold()
    held = pipeline(
        client,
        ("BalanceIn", {"login": LOGIN, "amount": 1}),
        ("GetAccountByLogin", {"login": LOGIN}),
        ("GetGroups", {}),
    )
    over = await client.request("GetAccountByLogin", {"login": LOGIN})
    assert (over["status"], over["error"]) == (429, "TOO_MANY_REQUESTS")
    assert (await client.ok("HealthCheck"))["status"] == "ok"
    assert (await other.ok("GetAccountByLogin", {"login": LOGIN}))["balance"] == 100.0
    ledger(h).release()
    write, account, groups = await answers(held)
    assert (write["status"], account["data"]["balance"], groups["status"]) == (200, 101.0, 200)


async def test_no_leak_when_a_connection_closes_with_reads_held(
    make_gateway: GatewayFactory,
) -> None:
    """A connection that closes with reads held behind its writes leaves nothing behind: the
    writes still complete, and the connection object is freed."""
    h = await make_gateway(gated=True)
    client, _ = await world(h)
    ledger(h).hold()
    pipeline(
        client,
        ("BalanceInSync", {"login": LOGIN, "amount": 1}),
        *[("GetAccountByLogin", {"login": LOGIN})] * 50,
    )
    await client.ok("HealthCheck")
    [connection] = [c for c in h.gateway.connections if c.session.access is not None]
    assert isinstance(connection, Connection)
    assert len(connection._held_reads) == 50
    gone = weakref.ref(connection)
    del connection
    await client.close()
    h.clients.remove(client)
    probe = await h.client()
    await wait_until(probe, lambda: gone() not in h.gateway.connections)
    closed = gone()
    assert closed is not None and not closed._held_reads
    del closed
    ledger(h).release()
    runtime = h.gateway.runtime
    await wait_until(probe, lambda: runtime.account(LOGIN).balance == 101)  # type: ignore[union-attr]
    assert h.gateway.waiters.pending_count() == 0
    gc.collect()
    assert gone() is None
