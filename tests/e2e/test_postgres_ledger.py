"""The PostgreSQL ledger's own duties, on a real server (docs/scaling.md): housekeeping at most
once a second of batch time and bounded per statement, the outbox pruned by age on the
database's clock, a lost writer connection failing only the batch that saw it, a connection
lost during COMMIT answered as an unknown outcome, a refused commit, numbers drawn from the
sequences one per need (automatic logins several to a batch), a listening connection that
is cut, refused or silent coming back and catching up (accounts it never saw included), a
shutdown that gives up leaving no connection, failed reads naming their reason, and connections
named for `pg_stat_activity`."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest

from manager_gateway.ledger import postgres as engine
from manager_gateway.ledger.postgres import PostgresLedger, lock_id
from manager_gateway.runtime import mainloop
from manager_gateway.runtime.storage import Batch, Lookup, RecordFilter, StorageError

from ..conftest import DEMO_USER, Client, GatewayFactory, Harness, captured_log
from ..fakes import FakeClock
from ..postgres import PostgresServer, execute, on_postgresql  # noqa: F401 (every test here)

SECRET = "nodes-share-one-signing-secret-of-32-bytes"
LOGIN = 1001
NEW_LOGIN = 1002
TTL_S = 60


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


async def test_each_purge_deletes_at_most_purge_rows_per_table(
    make_gateway: GatewayFactory, ledger_url: str, frozen_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Housekeeping deletes a bounded number of rows per table and statement, so a backlog
    (a node that was down) costs several short purges, never one long one."""
    monkeypatch.setattr(engine, "PURGE_ROWS", 2)
    h = await make_gateway(idempotency_ttl_s=TTL_S, clock=frozen_clock)
    client = await h.client(ttl_s=10 * TTL_S)
    await h.add_user(client, LOGIN)
    old = frozen_clock.wall() - 200 * 86400  # past any key's TTL and the journal's retention
    execute(
        ledger_url,
        "INSERT INTO idempotency SELECT '9', 'old' || n, 'BalanceIn', 'd', '{}', %s"
        " FROM generate_series(1, 3) AS n",
        old,
    )
    execute(
        ledger_url,
        "INSERT INTO settlement_journal SELECT 1, 'requests', 'old' || n, 'adjustment', 'f',"
        " '0', NULL, 'u', NULL, '1', NULL, NULL, '{}', %s FROM generate_series(1, 3) AS n",
        old,
    )
    execute(
        ledger_url,
        "INSERT INTO account_events (login, version, batch, event_type, data, account,"
        " created_at) SELECT 9, n, 0, NULL, NULL, '[]', extract(epoch FROM now()) - 7200"
        " FROM generate_series(1, 3) AS n",
    )

    def left() -> list[int]:
        return [
            h.stored("SELECT count(*) FROM idempotency WHERE ext_id LIKE 'old%'")[0][0],
            h.stored("SELECT count(*) FROM settlement_journal WHERE number LIKE 'old%'")[0][0],
            h.stored("SELECT count(*) FROM account_events WHERE login = 9")[0][0],
        ]

    frozen_clock.advance(1)
    await client.ok("BalanceIn", {"login": LOGIN, "amount": 1}, ext_id="a")
    assert left() == [1, 1, 1]
    frozen_clock.advance(1)
    await client.ok("BalanceIn", {"login": LOGIN, "amount": 1}, ext_id="b")
    assert left() == [0, 0, 0]


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
    execute(
        ledger_url, "UPDATE account_events SET created_at = created_at - 3599 WHERE version = 1"
    )
    execute(
        ledger_url, "UPDATE account_events SET created_at = created_at - 3601 WHERE version = 2"
    )
    frozen_clock.advance(1)
    await client.ok("BalanceInSync", {"login": LOGIN, "amount": 5})
    versions = sorted(row[0] for row in h.stored("SELECT version FROM account_events"))
    assert versions == [1, 3]


async def a_batch_held_by(
    holder: psycopg.Connection[Any], h: Harness, client: Client, ext_id: str
) -> asyncio.Future[dict[str, Any]]:
    """A BalanceIn of 7 to LOGIN whose batch waits for its key's lock, which `holder` takes
    first: it goes on when `holder` unlocks it or ends."""
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_id("key", "1", ext_id),))
    answer = client.send("BalanceIn", {"login": LOGIN, "amount": 7}, ext_id=ext_id)
    writer, url = f"gateway-{node_of(h)}-writer", h.gateway.settings.ledger_url

    def waiting() -> bool:
        query = "SELECT 1 FROM pg_stat_activity WHERE application_name = %s"
        return bool(execute(url, query + " AND wait_event_type = 'Lock'", writer))

    await until(waiting, "the batch waits for its key's lock")
    return answer


async def test_a_lost_writer_connection_fails_the_batch_that_saw_it_and_the_next_reconnects(
    make_gateway: GatewayFactory, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database ends the writer's connection while a batch waits in it: that batch is
    answered 500 and applies nothing; the next one opens a new connection and is applied."""
    h = await make_gateway()
    client = await h.client()
    await h.add_user(client, LOGIN)
    writer = f"gateway-{node_of(h)}-writer"
    with psycopg.connect(ledger_url, autocommit=True) as holder:
        held = await a_batch_held_by(holder, h, client, "held")
        with captured_log(monkeypatch, mainloop) as logs:
            terminate(ledger_url, writer)
            answer = await held
    assert answer["status"] == 500
    assert answer["message"] == "the ledger could not be read; nothing was applied"
    (failed,) = [e for e in logs if e["event"] == "ledger_read_failed"]
    assert failed["error"].startswith("ledger read failed: ")
    assert "terminating connection due to administrator command" in failed["error"]
    assert (await client.ok("BalanceInSync", {"login": LOGIN, "amount": 3}))["profit"] == 3
    account = await client.ok("GetAccountByLogin", {"login": LOGIN})
    assert account["balance"] == 3
    assert h.stored("SELECT ext_id FROM idempotency WHERE ext_id = 'held'") == []
    assert h.verify() == []


def terminate(url: str, application_name: str) -> None:
    """End the connections with that name from the server's side, as a restart would."""
    execute(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        application_name,
    )


@contextmanager
def refusing_connections(postgres: PostgresServer, database: str) -> Iterator[None]:
    """The database refuses new connections inside the block; those open go on."""
    execute(postgres.url, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        yield
    finally:
        execute(postgres.url, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def backends(url: str, application_name: str) -> list[int]:
    """The server processes of the connections with that name."""
    rows = execute(
        url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", application_name
    )
    return [row[0] for row in rows]


async def two_nodes(make_gateway: GatewayFactory, tmp_path: Path) -> tuple[Client, Harness, Client]:
    """Node A's client; node B and its client, whose session hears events."""
    a = await make_gateway(data_dir=tmp_path / "a", jwt_secret=SECRET)
    b = await make_gateway(data_dir=tmp_path / "b", jwt_secret=SECRET)
    on_a, on_b = await a.client(), await b.client()
    await on_b.ok("HealthCheck")  # B's session hears events from here on
    await a.add_user(on_a, LOGIN)
    return on_a, b, on_b


async def hears_credits(on_a: Client, on_b: Client, amounts: list[float]) -> None:
    """A credits LOGIN; B's session gets each trade and balance event once, in order."""
    made = [await on_a.ok("BalanceInSync", {"login": LOGIN, "amount": n}) for n in amounts]
    got = [await on_b.next_event(timeout=10) for _ in range(2 * len(amounts))]
    assert [e["data"] for e in got if e["event"] == "trade:event"] == made
    balances = [e["data"]["balance"] for e in got if e["event"] == "balance:event"]
    assert balances[-1] == (await on_a.ok("GetAccountByLogin", {"login": LOGIN}))["balance"]
    assert balances == sorted(balances) and len(balances) == len(amounts)


async def test_a_listener_cut_again_and_again_while_it_sets_up_keeps_coming_back(
    make_gateway: GatewayFactory, tmp_path: Path, postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Each of B's listening connections is cut as soon as it appears, often in the middle of
    its LISTEN, where asyncpg raises errors it does not document (InternalClientError): the
    feed that stopped on one of them left B deaf to every other node for good."""
    on_a, b, on_b = await two_nodes(make_gateway, tmp_path)
    listener = f"gateway-{node_of(b)}-events"
    with captured_log(monkeypatch, engine) as logs:
        cut: set[int] = set()
        for _ in range(8):
            await until(lambda: bool(set(backends(postgres.url, listener)) - cut), "a listener")
            (pid,) = set(backends(postgres.url, listener)) - cut
            execute(postgres.url, "SELECT pg_terminate_backend(%s)", pid)
            cut.add(pid)
        await hears_credits(on_a, on_b, [1, 2])
    assert len([e for e in logs if e["event"] == "peer_listener_lost"]) >= 1


async def test_a_node_refused_by_the_database_retries_then_catches_up(
    make_gateway: GatewayFactory, tmp_path: Path, ledger_url: str, postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """B's listening connection is cut and the database refuses new ones for a while; A
    commits meanwhile, also to an account it creates then, which B has never seen. B retries
    with a doubling delay, and once back its session gets A's events once, in order, from the
    outbox, the new account's included."""
    on_a, b, on_b = await two_nodes(make_gateway, tmp_path)
    database = urlsplit(ledger_url).path.lstrip("/")
    listener = f"gateway-{node_of(b)}-events"
    await until(lambda: bool(backends(postgres.url, listener)), "B listens")
    with captured_log(monkeypatch, engine) as logs:
        with refusing_connections(postgres, database):
            terminate(postgres.url, listener)
            made = [await on_a.ok("BalanceInSync", {"login": LOGIN, "amount": n}) for n in (1, 2)]
            await on_a.ok("AddUser", {**DEMO_USER, "login": NEW_LOGIN})
            made.append(await on_a.ok("BalanceInSync", {"login": NEW_LOGIN, "amount": 5}))

            def retried() -> bool:
                return len([e for e in logs if e["event"] == "peer_listener_unavailable"]) >= 3

            await until(retried, "B retried three times")
        got = [await on_b.next_event(timeout=10) for _ in range(6)]
    assert [e["data"] for e in got if e["event"] == "trade:event"] == made
    balances = [
        (e["data"]["login"], e["data"]["balance"]) for e in got if e["event"] == "balance:event"
    ]
    assert balances == [(LOGIN, 1), (LOGIN, 3), (NEW_LOGIN, 5)]
    (lost,) = [e for e in logs if e["event"] == "peer_listener_lost"]
    assert lost["log_level"] == "warning"
    retries = [e for e in logs if e["event"] == "peer_listener_unavailable"]
    assert [e["retry_s"] for e in retries[:3]] == [0.1, 0.2, 0.4]
    assert all(database in e["error"] and e["log_level"] == "warning" for e in retries[:3])
    assert max(e["retry_s"] for e in retries) <= engine.RECONNECT_MAX_S


async def test_a_listener_lost_before_it_listens_waits_longer_each_time(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's first two listening connections are cut by the server after they connect and
    before their LISTEN. Each loss is logged and waited out, 0.1 s then 0.2 s, as after a
    refused connect, and the third connection's feed starts with a catch-up. Without the wait a
    node would hammer a database that drops it; a delay lost on the way would end the feed."""
    ledger = PostgresLedger(ledger_url)
    await ledger.load(10)
    connect, cuts = asyncpg.connect, [0, 0]

    async def connect_then_cut(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        connection = await connect(*args, **kwargs)
        if cuts:  # wait until the server process is gone, so the LISTEN meets a dead connection
            cuts.pop()
            pid = connection.get_server_pid()
            execute(ledger_url, "SELECT pg_terminate_backend(%s, 5000)", pid)
        return connection

    monkeypatch.setattr(asyncpg, "connect", connect_then_cut)
    feed = ledger.peer_events()
    try:
        with captured_log(monkeypatch, engine) as logs:
            first = await asyncio.wait_for(anext(feed), 10)
    finally:
        await feed.aclose()
        await ledger.close()
    assert first.catch_up and not cuts
    assert [(e["event"], e.get("retry_s")) for e in logs] == [
        ("peer_listener_lost", None),
        ("peer_listener_unavailable", 0.1),
        ("peer_listener_lost", None),
        ("peer_listener_unavailable", 0.2),
    ]


async def test_a_silent_listening_connection_is_probed_and_replaced(
    make_gateway: GatewayFactory, tmp_path: Path, postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """B's listening connection stays open but answers nothing (its server process frozen, as
    behind a network gone dead): after LISTEN_PROBE_S without a word a probe finds it, and
    B listens on a new connection and catches up."""
    monkeypatch.setattr(engine, "LISTEN_PROBE_S", 0.2)
    on_a, b, on_b = await two_nodes(make_gateway, tmp_path)
    listener = f"gateway-{node_of(b)}-events"
    await until(lambda: bool(backends(postgres.url, listener)), "B listens")
    (frozen,) = backends(postgres.url, listener)
    os.kill(frozen, signal.SIGSTOP)
    try:
        with captured_log(monkeypatch, engine) as logs:
            await hears_credits(on_a, on_b, [1, 2])
        (lost,) = [e for e in logs if e["event"] == "peer_listener_lost"]
        assert lost["error"] == "TimeoutError"  # the probe's
        assert backends(postgres.url, listener) not in ([], [frozen])
    finally:
        os.kill(frozen, signal.SIGCONT)


async def test_a_connection_lost_during_commit_is_answered_as_an_unknown_outcome(
    make_gateway: GatewayFactory, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's connection is lost while PostgreSQL runs its COMMIT (held there by a
    deferred trigger waiting on the test's lock): the gateway cannot know whether the batch
    committed, says so, and the retry with the same extID settles it, applied once."""
    h = await make_gateway()
    client = await h.client()
    await h.add_user(client, LOGIN)
    writer = f"gateway-{node_of(h)}-writer"
    execute(
        ledger_url,
        "CREATE FUNCTION wait_at_commit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242);"
        " RETURN NULL; END $$",
    )
    execute(
        ledger_url,
        "CREATE CONSTRAINT TRIGGER wait_at_commit AFTER UPDATE ON accounts"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wait_at_commit()",
    )
    credit = {"login": LOGIN, "amount": 7}
    with psycopg.connect(ledger_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(4242)")
        with captured_log(monkeypatch, mainloop) as logs:
            held = client.send("BalanceInSync", credit, ext_id="at-commit")

            def committing() -> bool:
                query = "SELECT 1 FROM pg_stat_activity WHERE application_name = %s"
                return bool(execute(ledger_url, query + " AND query = 'COMMIT;'", writer))

            await until(committing, "the batch waits in its COMMIT")
            terminate(ledger_url, writer)
            answer = await held
    execute(ledger_url, "DROP TRIGGER wait_at_commit ON accounts")
    assert answer["status"] == 500
    assert answer["message"] == mainloop.UNKNOWN_OUTCOME
    (failed,) = [e for e in logs if e["event"] == "ledger_commit_failed"]
    assert failed["error"].startswith("ledger commit failed: ")
    retried = await client.ok("BalanceInSync", credit, ext_id="at-commit")
    assert retried["profit"] == 7
    assert (await client.ok("GetAccountByLogin", {"login": LOGIN}))["balance"] == 7
    assert h.verify() == []


async def test_a_node_keeps_a_window_of_history_and_a_restart_loads_one(
    make_gateway: GatewayFactory, tmp_path: Path, ledger_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """With `history_window` 3, a node takes seven keyed credits: memory forgets the oldest
    after each batch and the node goes on. A node started next on the ledger loads the newest
    three records and keys, and its start line counts them and the next order number."""
    window = 3
    first = await make_gateway(data_dir=tmp_path / "a", history_window=window, jwt_secret=SECRET)
    client = await first.client()
    await first.add_user(client, LOGIN)
    for n in range(1, 8):
        await client.ok("BalanceIn", {"login": LOGIN, "amount": n}, ext_id=f"credit-{n}")
    assert first.gateway.runtime.state.record_count == window
    assert first.gateway.runtime.state.key_count == window
    with captured_log(monkeypatch, mainloop) as logs:
        await make_gateway(data_dir=tmp_path / "b", history_window=window, jwt_secret=SECRET)
    (started,) = [e for e in logs if e["event"] == "main_loop_started"]
    ((newest,),) = execute(ledger_url, "SELECT max(ord) FROM records")
    counted = (started["records"], started["idempotency_keys"], started["next_order"])
    assert counted == (window, window, newest + 1)


async def test_each_operation_reserves_one_order_number(make_gateway: GatewayFactory) -> None:
    """Order numbers come from a sequence, one drawn per operation that may create a record: with
    nothing rolled back, records are numbered one after another."""
    h = await make_gateway()
    client = await h.client()
    await h.add_user(client, LOGIN)
    credit = {"login": LOGIN, "comment": "c"}
    orders = [(await client.ok("BalanceIn", {**credit, "amount": n}))["order"] for n in (1, 2, 3)]
    assert orders == list(range(orders[0], orders[0] + 3))


async def test_several_automatic_logins_in_one_batch_each_get_their_own(
    make_gateway: GatewayFactory, ledger_url: str
) -> None:
    """Three AddUsers without a login, queued behind a batch that waits on a lock another
    client holds, commit as one batch: it draws a login for each, steps over a taken one, and
    each gets its own."""
    h = await make_gateway()
    client = await h.client()
    await h.add_user(client, LOGIN)
    with psycopg.connect(ledger_url, autocommit=True) as holder:
        held = await a_batch_held_by(holder, h, client, "held")
        added = [client.send("AddUser", DEMO_USER) for _ in range(3)]
        await until(lambda: h.gateway.runtime.queue_depth == 3, "three AddUsers queued")
        holder.execute("SELECT pg_advisory_unlock(%s)", (lock_id("key", "1", "held"),))
    assert (await held)["status"] == 200
    answers = [await answer for answer in added]
    assert [a["status"] for a in answers] == [200, 200, 200], answers
    # The sequence starts at 1000 and LOGIN (1001) is taken: the batch drew 1000-1002, kept
    # two, drew one more; nothing is drawn beyond what the batch needs.
    assert sorted(a["data"]["login"] for a in answers) == [1000, 1002, 1003]
    assert (await client.ok("AddUser", DEMO_USER))["login"] == 1004
    stored = execute(ledger_url, "SELECT login FROM accounts ORDER BY login")
    assert stored == [(1000,), (LOGIN,), (1002,), (1003,), (1004,)]
    assert h.verify() == []


async def test_a_shutdown_that_gives_up_on_a_hung_batch_leaves_no_connection_behind(
    make_gateway: GatewayFactory, ledger_url: str
) -> None:
    """A batch waits on a lock the database never grants (another client holds it): the
    shutdown gives up after shutdown_timeout_s, answers it 503, and ends every connection of
    the node, the one the batch waits on included, so nothing of it commits later."""
    h = await make_gateway(shutdown_timeout_s=0.2)
    client = await h.client()
    await h.add_user(client, LOGIN)
    node = f"gateway-{node_of(h)}-%"
    with psycopg.connect(ledger_url, autocommit=True) as holder:
        hung = await a_batch_held_by(holder, h, client, "hung")
        await asyncio.wait_for(h.gateway.shutdown(), 10)
        assert not h.gateway.ledger_finished
        assert (await hung)["error"] == "SHUTTING_DOWN"

        def gone() -> bool:
            query = "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s"
            return not execute(ledger_url, query, node)

        await until(gone, "every connection of the node ended")
    assert execute(ledger_url, "SELECT ext_id FROM idempotency WHERE ext_id = 'hung'") == []
    assert execute(ledger_url, "SELECT balance FROM accounts") == [(0,)]


async def test_a_commit_the_database_refuses_applies_nothing_and_logs_why(
    make_gateway: GatewayFactory, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_gateway()
    client = await h.client()
    await h.add_user(client, LOGIN)
    execute(ledger_url, "ALTER TABLE records RENAME TO records_away")
    try:
        with captured_log(monkeypatch, mainloop) as logs:
            refused = await client.request("BalanceInSync", {"login": LOGIN, "amount": 5})
    finally:
        execute(ledger_url, "ALTER TABLE records_away RENAME TO records")
    assert refused["status"] == 500
    (failed,) = [e for e in logs if e["event"] == "ledger_commit_failed"]
    assert failed["error"].startswith('ledger commit failed: relation "records" does not exist')
    assert (await client.ok("GetAccountByLogin", {"login": LOGIN}))["balance"] == 0
    assert (await client.ok("BalanceInSync", {"login": LOGIN, "amount": 3}))["profit"] == 3
    assert h.verify() == []


async def test_every_connection_is_named_for_its_node_and_role(
    make_gateway: GatewayFactory, ledger_url: str
) -> None:
    """A node's connections, as docs/scaling.md counts them for sizing max_connections: one
    writer, one listener, and never more readers than READ_CONNECTIONS however many reads
    overlap (the listener's catch-up is one of them)."""
    h = await make_gateway()
    clients = [await h.client() for _ in range(8)]
    await clients[0].ok("MngGetTradesByFilter", {})  # a reader's connection

    def names() -> list[str]:
        rows = execute(
            ledger_url,
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'gateway-%'",
        )
        return sorted(row[0] for row in rows)

    node = node_of(h)
    await until(lambda: f"gateway-{node}-events" in names(), "the node listens")
    await asyncio.gather(*(c.ok("MngGetTradesByFilter", {}) for c in clients))
    held = names()
    assert set(held) == {f"gateway-{node}-{role}" for role in ("events", "reader", "writer")}
    assert held.count(f"gateway-{node}-events") == held.count(f"gateway-{node}-writer") == 1
    assert held.count(f"gateway-{node}-reader") <= engine.READ_CONNECTIONS


async def test_a_commit_no_fetch_began_is_refused_and_writes_nothing(ledger_url: str) -> None:
    """The main loop fetches every batch first (its locks); a commit without one is a bug in
    the caller, refused rather than written unlocked."""
    ledger = PostgresLedger(ledger_url)
    await ledger.load(10)
    try:
        with pytest.raises(
            StorageError, match=r"^ledger commit failed: no batch was begun by fetch$"
        ):
            await ledger.commit(Batch(next_order=2))
    finally:
        await ledger.close()
    assert execute(ledger_url, "SELECT count(*) FROM accounts") == [(0,)]


async def test_a_start_that_cannot_read_the_ledger_names_the_databases_reason(
    ledger_url: str,
) -> None:
    """A table gone from under a migrated ledger: the start fails saying what the database
    said, the text the operator's log shows."""
    first = PostgresLedger(ledger_url)
    await first.load(10)
    await first.close()
    execute(ledger_url, "ALTER TABLE accounts RENAME TO accounts_away")
    ledger = PostgresLedger(ledger_url)
    try:
        reason = 'relation "accounts" does not exist'
        with pytest.raises(StorageError, match=rf"^reading the ledger failed: {reason}$"):
            await ledger.load(10)
    finally:
        await ledger.close()


async def test_a_writer_the_database_refuses_names_the_databases_reason(
    ledger_url: str, postgres: PostgresServer
) -> None:
    """The writer's connection cannot be (re)opened: the batch fails saying why."""
    database = urlsplit(ledger_url).path.lstrip("/")
    ledger = PostgresLedger(ledger_url)
    reason = f'database "{database}" is not currently accepting connections'
    try:
        with (
            refusing_connections(postgres, database),
            pytest.raises(StorageError, match=rf"^cannot connect to the ledger: {reason}$"),
        ):
            await ledger.fetch(Lookup())
    finally:
        await ledger.close()


async def test_history_reads_that_fail_name_the_databases_reason(ledger_url: str) -> None:
    """Before the ledger is open, and when the database refuses a read, each history read
    raises StorageError saying why: that text is what the operator's log shows."""
    ledger = PostgresLedger(ledger_url)
    with pytest.raises(StorageError, match=r"^the ledger is not open$"):
        await ledger.record(1)
    await ledger.load(10)
    try:
        execute(ledger_url, "ALTER TABLE records RENAME TO records_away")
        execute(ledger_url, "ALTER TABLE settlement_journal RENAME TO journal_away")
        reads = [
            ("records", ledger.record(1)),
            ("records", ledger.find_records(RecordFilter())),
            ("settlement_journal", ledger.journal_rows()),
        ]
        for table, read in reads:
            with pytest.raises(StorageError) as failed:
                await read
            reason = f'relation "{table}" does not exist'
            assert str(failed.value).startswith(f"ledger read failed: {reason}")
    finally:
        await ledger.close()
