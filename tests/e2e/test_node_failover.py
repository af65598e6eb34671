"""Gateway nodes as processes on one PostgreSQL, failing: one SIGKILLed under load, its clients
retrying on another node; one cut off from the database's notifications while frozen.

docs/scaling.md ("Failover", "Events"): nothing acknowledged is lost, nothing applied twice, and
a node's sessions get every event, once, in order, even those committed while it was not
listening."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from manager_gateway.session.access import SessionType
from manager_gateway.session.tokens import TokenService

from ..conftest import DEMO_USER, Client
from ..postgres import PostgresServer
from .test_durability import Server, cli

pytestmark = pytest.mark.slow

SECRET = "nodes-share-one-signing-secret-of-32-bytes"
LOGINS = (7001, 7002, 7003, 7004)
SEED = 20261202
OPERATIONS = 240
KILL_AFTER = 60  # answers from the first node before it is killed
ANSWER_TIMEOUT_S = 30


def token() -> str:
    tokens = TokenService(SECRET.encode())
    return tokens.issue("1", SessionType.ADMIN, ["*"], int(time.time()) + 3600)


async def node(tmp_path: Path, name: str, url: str) -> Server:
    data_dir = tmp_path / name
    data_dir.mkdir()
    return await Server.start(
        data_dir, tmp_path / f"{name}.log", {"ledger_url": url, "jwt_secret": SECRET}
    )


def stored(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as db:
        return db.execute(sql, params).fetchall()  # type: ignore[arg-type]


async def events_for(client: Client, count: int) -> dict[int, list[int]]:
    """The next `count` trade:events, as orders per login in arrival order."""
    seen: dict[int, list[int]] = {}
    got = 0
    while got < count:
        event = await client.next_event(timeout=ANSWER_TIMEOUT_S)
        if event["event"] == "trade:event":
            seen.setdefault(event["data"]["login"], []).append(event["data"]["order"])
            got += 1
    return seen


def committed_order(url: str) -> dict[int, list[int]]:
    """Each account's finance orders in version order, as the outbox holds them."""
    rows = stored(
        url,
        "SELECT login, (data::json ->> 'order')::bigint FROM account_events"
        " WHERE data IS NOT NULL ORDER BY login, version",
    )
    orders: dict[int, list[int]] = {}
    for login, order in rows:
        orders.setdefault(login, []).append(order)
    return orders


async def test_a_node_killed_under_load_loses_nothing_its_clients_retry_elsewhere(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    url = postgres.database()
    first = await node(tmp_path, "a", url)
    second = await node(tmp_path, "b", url)
    clients: list[Client] = []
    try:
        admin = await Client.connect(first.port, token())
        listener = await Client.connect(second.port, token())
        clients += [admin, listener]
        await listener.ok("HealthCheck")
        for login in LOGINS:
            await admin.ok("AddUser", {**DEMO_USER, "login": login})
            await admin.ok("BalanceInSync", {"login": login, "amount": 1000, "comment": "seed"})
        plan = []
        for n in range(OPERATIONS):
            command = rng.choice(("BalanceInSync", "BalanceOutSync", "CreditInSync"))
            amount = rng.randrange(1, 500) / 100 * (-1 if command == "BalanceOutSync" else 1)
            data = {"login": rng.choice(LOGINS), "amount": amount, "comment": f"op-{n}"}
            plan.append((f"op-{n}", command, data))

        # Pipelined on two connections to the first node; it is killed mid-stream.
        senders = [await Client.connect(first.port, token()) for _ in range(2)]
        clients += senders
        pending = [
            senders[n % 2].send(command, data, ext_id=ext_id)
            for n, (ext_id, command, data) in enumerate(plan)
        ]
        answered: dict[str, dict[str, Any]] = {}
        for ext_id, future in zip((p[0] for p in plan), pending, strict=True):
            answer = await asyncio.wait_for(future, ANSWER_TIMEOUT_S)
            assert answer["status"] == 200, answer
            answered[ext_id] = answer["data"]
            if len(answered) == KILL_AFTER:
                first.proc.send_signal(signal.SIGKILL)
                break
        assert await first.wait() == -signal.SIGKILL
        for sender in senders:  # late answers may still be in the socket: take them too
            await sender.closed.wait()
        for ext_id, future in zip((p[0] for p in plan), pending, strict=True):
            if future.done() and ext_id not in answered:
                answer = future.result()
                assert answer["status"] == 200, answer
                answered[ext_id] = answer["data"]

        # Every client retries everything it sent, on the surviving node, same extIDs.
        retry = await Client.connect(second.port, token())
        clients.append(retry)
        retried = await asyncio.gather(
            *(retry.request(command, data, ext_id=ext_id) for ext_id, command, data in plan)
        )
        for (ext_id, _, _), answer in zip(plan, retried, strict=True):
            assert answer["status"] == 200, answer
            if ext_id in answered:  # acknowledged before the kill: the same record, not a new one
                assert answer["data"] == answered[ext_id]

        # Each operation is in the ledger exactly once; the money adds up; verify agrees.
        counts = dict(stored(url, "SELECT comment, count(*) FROM records GROUP BY comment"))
        assert all(counts.get(ext_id) == 1 for ext_id, _, _ in plan)
        expected = {login: [Decimal(1000), Decimal(0)] for login in LOGINS}
        for _, command, data in plan:
            expected[data["login"]][command == "CreditInSync"] += Decimal(str(data["amount"]))
        balances = stored(url, "SELECT login, balance, credit FROM accounts ORDER BY login")
        assert balances == [(login, *expected[login]) for login in LOGINS]
        status, out = await cli("ledger", "verify", "--ledger-url", url)
        assert status == 0, out

        # The surviving node's listener saw each account's events once, in commit order: the
        # dead node's as they were committed, its own after.
        total = sum(len(orders) for orders in committed_order(url).values())
        assert await events_for(listener, total) == committed_order(url)
    finally:
        for client in clients:
            await client.close()
        await first.stop()
        await second.stop()


async def test_events_committed_while_a_node_could_not_hear_them_reach_its_sessions_in_order(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """The node is frozen (SIGSTOP), its listening connection is cut by the database, and another
    node commits: the NOTIFYs go nowhere. Thawed, it reconnects, reads what it missed from the
    outbox, and its session gets every event once, in order, then the live ones."""
    url = postgres.database()
    writer_node = await node(tmp_path, "a", url)
    frozen = await node(tmp_path, "b", url)
    clients: list[Client] = []
    try:
        writer = await Client.connect(writer_node.port, token())
        listener = await Client.connect(frozen.port, token())
        clients += [writer, listener]
        await listener.ok("HealthCheck")
        await writer.ok("AddUser", {**DEMO_USER, "login": LOGINS[0]})
        first = await writer.ok("BalanceInSync", {"login": LOGINS[0], "amount": 1, "comment": "1"})
        assert (await events_for(listener, 1)) == {LOGINS[0]: [first["order"]]}

        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            cut = stored(
                url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'gateway-%%-events'",
            )
            assert cut == [(True,), (True,)]  # both nodes' listening connections
            missed = [
                await writer.ok("BalanceInSync", {"login": LOGINS[0], "amount": n, "comment": "m"})
                for n in range(2, 7)
            ]
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        # Nothing else is committed: only the catch-up after reconnecting can bring these.
        missed_orders = [r["order"] for r in missed]
        assert await events_for(listener, len(missed)) == {LOGINS[0]: missed_orders}
        live = await writer.ok("BalanceInSync", {"login": LOGINS[0], "amount": 9, "comment": "l"})
        # The next one live, and none of the missed again (a repeat would come before it).
        assert await events_for(listener, 1) == {LOGINS[0]: [live["order"]]}
        log = (tmp_path / "b.log").read_text()
        assert "peer_listener_lost" in log and "peer_events_lost" not in log
    finally:
        for client in clients:
            await client.close()
        await writer_node.stop()
        await frozen.stop()
