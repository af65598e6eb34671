"""Several gateway nodes on one PostgreSQL (docs/scaling.md): the database decides what is
applied, and every node's sessions see every account's events once, in commit order."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from manager_gateway.ledger import postgres as engine

from ..conftest import Client, GatewayFactory, Harness, captured_log
from ..platform import Platform, adjustment, base_url, cancellation, fund, settlement_gateway
from ..postgres import PostgresServer, execute, on_postgresql  # noqa: F401 (every test here)

SECRET = "nodes-share-one-signing-secret-of-32-bytes"
HOT = 1001
SEED = 20261202


async def nodes(
    make_gateway: GatewayFactory, tmp_path: Path, count: int, **settings: Any
) -> list[Harness]:
    """`count` gateways on the test's database, each with a data dir of its own."""
    return [
        await make_gateway(data_dir=tmp_path / f"node{n}", jwt_secret=SECRET, **settings)
        for n in range(count)
    ]


async def listening(harness: Harness) -> Client:
    """A client whose session hears events (a session does once a request bound its token)."""
    client = await harness.client()
    await client.ok("HealthCheck")
    return client


def trades(client: Client, login: int) -> list[dict[str, Any]]:
    """The trade:event records `client` has received for `login`, in arrival order."""
    return [
        e["data"]
        for e in client.drain_events()
        if e["event"] == "trade:event" and e["data"]["login"] == login
    ]


async def gather_trades(
    client: Client, login: int, count: int, balances: list[Decimal] | None = None
) -> list[dict[str, Any]]:
    """The next `count` trade:events for `login` (waiting for each, bounded); the balances its
    balance:events announced go to `balances`."""
    got: list[dict[str, Any]] = []
    while len(got) < count or (balances is not None and len(balances) < count):
        event = await client.next_event(timeout=10)
        if event["data"]["login"] != login:
            continue
        if event["event"] == "trade:event":
            got.append(event["data"])
        elif balances is not None:
            balances.append(Decimal(str(event["data"]["balance"])))
    return got


async def test_an_operation_on_one_node_reaches_the_sessions_of_every_node(
    make_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B hears A's operation through its NOTIFY, not through a reconnect's catch-up: a
    listener that failed on each batch would still deliver, late, and log that it was lost."""
    a, b = await nodes(make_gateway, tmp_path, 2)
    on_a, on_b = await a.client(), await listening(b)
    with captured_log(monkeypatch, engine) as logs:
        await a.add_user(on_a, HOT)
        record = await on_a.ok("BalanceInSync", {"login": HOT, "amount": 25.5})
        event = await on_b.next_event()
        assert event == {"event": "trade:event", "type": 0, "data": record}
        balance = await on_b.next_event()
        assert balance["event"] == "balance:event" and balance["data"]["balance"] == 25.5
    assert [e["event"] for e in logs if e["event"].startswith("peer_listener")] == []
    # Node B's own reads follow: the account it never saw created, and the record.
    assert (await on_b.ok("GetAccountByLogin", {"login": HOT}))["balance"] == 25.5
    assert await on_b.ok("GetTradeByOrder", {"order": record["order"]}) == record
    # And B's writes start from it.
    await on_b.ok("BalanceOutSync", {"login": HOT, "amount": -25.5})
    refused = await on_a.request("BalanceOutSync", {"login": HOT, "amount": -0.01})
    assert refused["error"] == "NOT_ENOUGH_MONEY"


async def test_concurrent_credits_and_debits_on_one_account_from_three_nodes(
    make_gateway: GatewayFactory, tmp_path: Path, ledger_url: str
) -> None:
    """Deposits and withdrawals race on one hot account from every node: each answered 200 is
    applied once, the balance never goes below zero, and every node's listener sees the same
    events in the same (version) order."""
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    gateways = await nodes(make_gateway, tmp_path, 3)
    listeners = [await listening(g) for g in gateways]
    setup = await gateways[0].client()
    await gateways[0].add_user(setup, HOT)
    await setup.ok("BalanceInSync", {"login": HOT, "amount": 100})
    for listener in listeners:  # every node knows the account and its money first
        first: list[Decimal] = []
        assert len(await gather_trades(listener, HOT, 1, first)) == 1
        assert first == [100]

    senders = [await g.client() for g in gateways for _ in range(2)]
    planned: list[tuple[Client, str, Decimal]] = []
    for sender in senders:
        for _ in range(15):
            amount = Decimal(rng.randrange(1, 4000)) / 100
            command = rng.choice(("BalanceInSync", "BalanceOutSync"))
            planned.append((sender, command, amount if command == "BalanceInSync" else -amount))
    answers = await asyncio.gather(
        *(s.request(c, {"login": HOT, "amount": float(a)}) for s, c, a in planned)
    )
    applied = [
        (answer["data"]["order"], amount)
        for answer, (_, _, amount) in zip(answers, planned, strict=True)
        if answer["status"] == 200
    ]
    refused = [a for a in answers if a["status"] != 200]
    assert {a["error"] for a in refused} <= {"NOT_ENOUGH_MONEY"}
    assert applied and refused, "the seed should give both outcomes"

    expected = Decimal(100) + sum((amount for _, amount in applied), Decimal(0))
    rows = execute(ledger_url, "SELECT balance, version FROM accounts WHERE login = %s", HOT)
    assert rows == [(expected, 2 + len(applied))]  # AddUser, the first deposit, then these
    orders = execute(
        ledger_url,
        "SELECT (data::json ->> 'order')::bigint FROM account_events"
        " WHERE login = %s AND version > 2 ORDER BY version",
        HOT,
    )
    in_order = [order for (order,) in orders]
    assert sorted(in_order) == sorted(order for order, _ in applied)
    for listener in listeners:
        balances: list[Decimal] = []
        seen = await gather_trades(listener, HOT, len(applied), balances)
        assert [record["order"] for record in seen] == in_order
        assert trades(listener, HOT) == []  # and nothing twice
        # Each node announced the balance after each event: never below zero, ending exact.
        assert min(balances) >= 0 and balances[-1] == expected
    for gateway in gateways:
        account = await (await gateway.client()).ok("GetAccountByLogin", {"login": HOT})
        assert Decimal(str(account["balance"])) == expected
    assert gateways[0].verify() == []


async def test_one_ext_id_sent_to_two_nodes_at_once_is_applied_once(
    make_gateway: GatewayFactory, tmp_path: Path, ledger_url: str
) -> None:
    a, b = await nodes(make_gateway, tmp_path, 2)
    on_a, on_b = await a.client(), await b.client()  # the same manager: one key space
    await a.add_user(on_a, HOT)
    for n in range(20):
        first, second = await asyncio.gather(
            on_a.request("BalanceInSync", {"login": HOT, "amount": 1}, ext_id=f"twice-{n}"),
            on_b.request("BalanceInSync", {"login": HOT, "amount": 1}, ext_id=f"twice-{n}"),
        )
        assert first["status"] == second["status"] == 200, (first, second)
        assert first["data"] == second["data"]
    assert execute(ledger_url, "SELECT count(*), sum(profit) FROM records") == [(20, 20)]
    assert execute(ledger_url, "SELECT balance FROM accounts") == [(Decimal(20),)]
    assert a.verify() == []


async def test_an_adjustment_and_its_cancel_on_different_nodes(
    make_gateway: GatewayFactory, tmp_path: Path, ledger_url: str
) -> None:
    """B starts after A took the adjustment, so it loads a ledger holding its journal row."""
    a = await settlement_gateway(make_gateway, data_dir=tmp_path / "a", jwt_secret=SECRET)
    tcp = await a.client()
    await fund(tcp, a, HOT)
    async with aiohttp.ClientSession() as http:
        on_a = Platform(base_url(a), http)
        body = adjustment(HOT, "12.50")
        taken = await on_a.adjust(body)
        assert taken["code"] == "0", taken
        b = await settlement_gateway(make_gateway, data_dir=tmp_path / "b", jwt_secret=SECRET)
        on_b = Platform(base_url(b), http)
        number = body["requestUniqueNo"]
        cancel = cancellation(HOT, number, "12.50")
        undone = await on_b.cancel(cancel)
        assert undone["code"] == "0", undone
        # Replays on the other node answer as first answered, and move nothing.
        assert (await on_b.adjust(body))["code"] == "0"
        replayed = await on_a.cancel(cancel)
        assert (replayed["code"], replayed["data"]) == (undone["code"], undone["data"])
        assert await on_a.wallet(HOT) == await on_b.wallet(HOT) == "1000.00"
    assert execute(
        ledger_url,
        "SELECT kind, cancelled_by IS NOT NULL FROM settlement_journal ORDER BY kind",
    ) == [("adjustment", True), ("cancel", False)]
    assert a.verify() == []


async def test_ledger_verify_reads_postgresql_and_finds_what_was_changed_behind_its_back(
    make_gateway: GatewayFactory, tmp_path: Path, ledger_url: str
) -> None:
    (a,) = await nodes(make_gateway, tmp_path, 1)
    client = await a.client()
    await a.add_user(client, HOT)
    await client.ok("BalanceInSync", {"login": HOT, "amount": 10})
    assert a.verify() == []
    with psycopg.connect(ledger_url) as db:
        db.execute("UPDATE accounts SET balance = balance + 1")
        db.execute("ALTER SEQUENCE order_numbers RESTART WITH 1")
    assert a.verify() == [
        f"account {HOT}: balance 11.00, records sum to 10.00",
        "order sequence 1 is not ahead of order 1",
    ]
