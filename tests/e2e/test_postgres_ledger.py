"""The PostgreSQL ledger's own duties, on a real server (docs/scaling.md): housekeeping at most
once a second of batch time, the outbox pruned by age on the database's clock, a lost writer
connection failing only the batch that saw it, and connections named for `pg_stat_activity`.
A listener that reconnects and catches up is tested with nodes as processes, frozen while the
database cuts them off (test_node_failover.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from manager_gateway.ledger.postgres import PostgresLedger, lock_id
from manager_gateway.runtime.storage import Batch, StorageError

from ..conftest import GatewayFactory, Harness
from ..fakes import FakeClock
from ..postgres import PostgresServer

SECRET = "nodes-share-one-signing-secret-of-32-bytes"
LOGIN = 1001
TTL_S = 60


@pytest.fixture
def ledger_url(postgres: PostgresServer) -> str:
    return postgres.database()


def sql(url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """One statement on a connection of the test's own, committed."""
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(statement, params)  # type: ignore[arg-type]  # our own SQL
        return cursor.fetchall() if cursor.description else []


def node_of(h: Harness) -> str:
    ledger = h.gateway.ledger
    assert isinstance(ledger, PostgresLedger)
    return ledger.node


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a state of the database or a log that another task brings about (bounded)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_housekeeping_runs_at_most_once_a_second_of_batch_time(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """Expired keys go with the first commit a second or more after the last purge, not with
    every commit: a key that expires between two purges stays until the next one."""
    h = await make_gateway(idempotency_ttl_s=TTL_S, clock=frozen_clock)
    client = await h.client(ttl_s=10 * TTL_S)
    await h.add_user(client, LOGIN)
    credit = {"login": LOGIN, "amount": 1.0, "comment": "c"}

    def keys() -> set[str]:
        return {row[0] for row in h.stored("SELECT ext_id FROM idempotency")}

    await client.ok("CreditIn", credit, ext_id="a")  # a purge runs: nothing has expired
    frozen_clock.advance(0.5)
    await client.ok("CreditIn", credit, ext_id="x")
    frozen_clock.advance(TTL_S - 0.25)
    await client.ok("CreditIn", credit, ext_id="b")  # a purge: "a" expired 0.25 s ago
    assert keys() == {"x", "b"}
    frozen_clock.advance(0.5)  # "x" expired 0.25 s ago, and the last purge was 0.5 s ago
    await client.ok("CreditIn", credit, ext_id="c")
    assert keys() == {"x", "b", "c"}
    frozen_clock.advance(0.5)  # exactly a second since the last purge
    await client.ok("CreditIn", credit, ext_id="d")
    assert keys() == {"b", "c", "d"}
    assert h.verify() == []


async def test_outbox_rows_older_than_an_hour_on_the_databases_clock_are_pruned(
    make_gateway: GatewayFactory, ledger_url: str, frozen_clock: FakeClock
) -> None:
    """The outbox keeps events EVENT_AGE_S for nodes that fell behind; pruning compares the
    rows' database time with the database's clock, whatever the gateway's clock says (frozen
    here, and moved on only past the once-a-second bound of housekeeping)."""
    h = await make_gateway(clock=frozen_clock)
    client = await h.client()
    await h.add_user(client, LOGIN)
    await client.ok("BalanceInSync", {"login": LOGIN, "amount": 5})
    sql(ledger_url, "UPDATE account_events SET created_at = created_at - 3599 WHERE version = 1")
    sql(ledger_url, "UPDATE account_events SET created_at = created_at - 3601 WHERE version = 2")
    frozen_clock.advance(1)
    await client.ok("BalanceInSync", {"login": LOGIN, "amount": 5})
    versions = sorted(row[0] for row in h.stored("SELECT version FROM account_events"))
    assert versions == [1, 3]


async def test_a_lost_writer_connection_fails_the_batch_that_saw_it_and_the_next_reconnects(
    make_gateway: GatewayFactory, ledger_url: str
) -> None:
    """The database ends the writer's connection while a batch waits in it: that batch is
    answered 500 and applies nothing; the next one opens a new connection and is applied."""
    h = await make_gateway()
    client = await h.client()
    await h.add_user(client, LOGIN)
    writer = f"gateway-{node_of(h)}-writer"
    with psycopg.connect(ledger_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_id("key", "1", "held"),))
        held = client.send("BalanceIn", {"login": LOGIN, "amount": 7}, ext_id="held")

        def waiting() -> bool:
            rows = sql(
                ledger_url,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s"
                " AND wait_event_type = 'Lock'",
                writer,
            )
            return bool(rows)

        await until(waiting, "the batch waits for the key's lock")
        sql(
            ledger_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            writer,
        )
        answer = await held
    assert answer["status"] == 500
    assert answer["message"] == "the ledger could not be read; nothing was applied"
    assert (await client.ok("BalanceInSync", {"login": LOGIN, "amount": 3}))["profit"] == 3
    account = await client.ok("GetAccountByLogin", {"login": LOGIN})
    assert account["balance"] == 3
    assert h.stored("SELECT ext_id FROM idempotency WHERE ext_id = 'held'") == []
    assert h.verify() == []


async def test_every_connection_is_named_for_its_node_and_role(
    make_gateway: GatewayFactory, ledger_url: str
) -> None:
    h = await make_gateway()
    client = await h.client()
    await client.ok("MngGetTradesByFilter", {})  # a reader's connection
    names = {
        row[0]
        for row in sql(
            ledger_url,
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'gateway-%%'",
        )
    }
    node = node_of(h)
    assert names == {f"gateway-{node}-{role}" for role in ("writer", "reader", "events")}


async def test_a_commit_no_fetch_began_is_refused_and_writes_nothing(ledger_url: str) -> None:
    """The main loop fetches every batch first (its locks); a commit without one is a bug in
    the caller, refused rather than written unlocked."""
    ledger = PostgresLedger(ledger_url)
    await ledger.load(10)
    try:
        with pytest.raises(StorageError, match="no batch was begun by fetch"):
            await ledger.commit(Batch(next_order=2))
    finally:
        await ledger.close()
    assert sql(ledger_url, "SELECT count(*) FROM accounts") == [(0,)]
