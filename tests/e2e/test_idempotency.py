"""docs/protocol.md section 7: a retried extID answers the first outcome and applies nothing new."""

from __future__ import annotations

import asyncio
from typing import Any

from manager_gateway.session.access import SessionType

from ..conftest import DEMO_USER, Client, GatewayFactory, Harness, ledger, wait_until
from ..fakes import FakeClock
from ..postgres import SQLITE_ONLY, on_both_engines  # noqa: F401 (runs every test here on both engines)

LOGIN = 5001
CREDIT = {"login": LOGIN, "amount": 125.5, "comment": "bonus"}


async def money(client: Client, login: int = LOGIN) -> tuple[float, float]:
    account = await client.ok("GetAccountByLogin", {"login": login})
    return account["balance"], account["credit"]


async def trade_count(client: Client, login: int = LOGIN) -> int:
    found = await client.ok("MngGetTradesByFilter", {"login": login})
    return int(found["count"])


def post(
    client: Client, command: str, data: dict[str, Any], ext_id: str
) -> asyncio.Future[dict[str, Any]]:
    """Send with a given extID and a fresh future: the harness `Client` would hand back the
    stored answer of a reused extID instead of waiting for the server's new one."""
    client.responses.pop(ext_id, None)
    return client.send(command, data, ext_id=ext_id)


async def call(client: Client, command: str, data: dict[str, Any], ext_id: str) -> dict[str, Any]:
    """`post` and await the whole answer."""
    return await asyncio.wait_for(post(client, command, data, ext_id), 10)


async def ok(client: Client, command: str, data: dict[str, Any], ext_id: str) -> Any:
    """`call`, assert a 200, return its `data`."""
    answer = await call(client, command, data, ext_id)
    assert answer["status"] == 200, answer
    return answer["data"]


async def test_retry_on_same_connection_answers_the_same_record(gw: Harness) -> None:
    """CreditInSync / BalanceIn sent twice on one connection: same answer, applied once."""
    client = await gw.client()
    await gw.add_user(client, LOGIN)
    first = await ok(client, "CreditInSync", CREDIT, "same-conn-1")
    again = await ok(client, "CreditInSync", CREDIT, "same-conn-1")
    assert again == first
    ack = await ok(client, "BalanceIn", {"login": LOGIN, "amount": 40.0}, "same-conn-2")
    assert await ok(client, "BalanceIn", {"login": LOGIN, "amount": 40.0}, "same-conn-2") == ack
    assert ack["order"] != first["order"] and ack["state"] == 10
    assert await money(client) == (40.0, 125.5)
    assert await trade_count(client) == 2


async def test_retry_on_another_connection_with_same_subject(gw: Harness) -> None:
    """A retry on a second connection whose token has the same `sub` gets the same record."""
    first_conn = await gw.client(login=7)
    await gw.add_user(first_conn, LOGIN)
    first = await ok(first_conn, "CreditInSync", CREDIT, "cross-1")
    second_conn = await gw.client(login=7, role=SessionType.DEALER)
    assert await ok(second_conn, "CreditInSync", CREDIT, "cross-1") == first
    record = await second_conn.ok("GetTradeByOrder", {"order": first["order"]})
    assert record == first
    assert await money(second_conn) == (0.0, 125.5)
    assert await trade_count(second_conn) == 1


async def test_another_subject_with_same_ext_id_is_a_separate_operation(gw: Harness) -> None:
    """Keys are per token subject: another `sub` reusing the extID applies a new operation."""
    first_conn = await gw.client(login=7)
    await gw.add_user(first_conn, LOGIN)
    first = await ok(first_conn, "CreditInSync", CREDIT, "shared-1")
    other_conn = await gw.client(login=8)
    other = await ok(other_conn, "CreditInSync", CREDIT, "shared-1")
    assert other["order"] != first["order"]
    assert {k: v for k, v in other.items() if k != "order"} == {
        k: v for k, v in first.items() if k != "order"
    }
    assert await money(first_conn) == (0.0, 251.0)
    assert await trade_count(first_conn) == 2


@SQLITE_ONLY
async def test_in_flight_duplicates_in_one_batch_share_one_outcome(
    make_gateway: GatewayFactory,
) -> None:
    """Duplicates queued behind a stalled commit: both answered with one order, applied once."""
    gw = await make_gateway(gated=True)
    first_conn, second_conn, probe = await gw.client(), await gw.client(), await gw.client()
    await gw.add_user(probe, LOGIN)
    await gw.add_user(probe, LOGIN + 1)
    waiters = gw.gateway.waiters

    ledger(gw).hold()
    ledger(gw).commit_started.clear()
    blocker = post(probe, "BalanceInSync", {"login": LOGIN + 1, "amount": 1.0}, "blocker")
    await wait_until(probe, ledger(gw).commit_started.is_set)
    sync_a = post(first_conn, "CreditInSync", CREDIT, "inflight-1")
    sync_b = post(second_conn, "CreditInSync", CREDIT, "inflight-1")
    async_a = post(first_conn, "BalanceIn", {"login": LOGIN, "amount": 9.0}, "inflight-2")
    async_b = post(second_conn, "BalanceIn", {"login": LOGIN, "amount": 9.0}, "inflight-2")
    runtime = gw.gateway.runtime
    await wait_until(probe, lambda: waiters.pending_count() == 3 and runtime.queue_depth == 4)
    assert not (sync_a.done() or sync_b.done() or async_a.done() or async_b.done())
    ledger(gw).release()

    answers = await asyncio.wait_for(asyncio.gather(blocker, sync_a, sync_b, async_a, async_b), 10)
    assert [answer["status"] for answer in answers] == [200] * 5
    assert answers[1]["data"] == answers[2]["data"]
    assert answers[3]["data"] == answers[4]["data"]
    assert answers[1]["data"]["order"] != answers[3]["data"]["order"]
    assert await money(probe) == (9.0, 125.5)
    assert await trade_count(probe) == 2
    assert waiters.pending_count() == 0


@SQLITE_ONLY
async def test_duplicate_sent_while_the_first_is_committing(make_gateway: GatewayFactory) -> None:
    """A duplicate arriving while the first one's commit is stalled waits for the same outcome."""
    gw = await make_gateway(gated=True)
    first_conn, second_conn, probe = await gw.client(), await gw.client(), await gw.client()
    await gw.add_user(probe, LOGIN)
    waiters = gw.gateway.waiters

    ledger(gw).hold()
    ledger(gw).commit_started.clear()
    first = post(first_conn, "CreditInSync", CREDIT, "committing-1")
    await wait_until(probe, ledger(gw).commit_started.is_set)
    second = post(second_conn, "CreditInSync", CREDIT, "committing-1")
    runtime = gw.gateway.runtime
    await wait_until(probe, lambda: waiters.pending_count() == 2 and runtime.queue_depth == 1)
    assert not (first.done() or second.done())
    ledger(gw).release()

    answers = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert [answer["status"] for answer in answers] == [200, 200]
    assert answers[0]["data"] == answers[1]["data"]
    assert await money(probe) == (0.0, 125.5)
    assert await trade_count(probe) == 1
    assert waiters.pending_count() == 0


async def test_same_ext_id_with_other_data_or_command_is_a_mismatch(gw: Harness) -> None:
    """The same key with a different payload or command is 422 IDEMPOTENCY_MISMATCH."""
    client = await gw.client()
    await gw.add_user(client, LOGIN)
    first = await ok(client, "CreditInSync", CREDIT, "mismatch-1")
    variants: list[tuple[str, dict[str, Any]]] = [
        ("CreditInSync", {**CREDIT, "amount": 125.51}),
        ("CreditInSync", {**CREDIT, "comment": "other"}),
        ("CreditIn", CREDIT),
        ("BalanceInSync", {"login": LOGIN, "amount": 125.5}),
        ("AddUser", {**DEMO_USER, "login": LOGIN + 1}),
    ]
    for command, data in variants:
        answer = await call(client, command, data, "mismatch-1")
        assert (answer["extID"], answer["status"], answer.get("error")) == (
            "mismatch-1",
            422,
            "IDEMPOTENCY_MISMATCH",
        ), (command, data, answer)
    assert await ok(client, "CreditInSync", CREDIT, "mismatch-1") == first
    assert await money(client) == (0.0, 125.5)
    assert await trade_count(client) == 1
    assert (await client.request("GetAccountByLogin", {"login": LOGIN + 1}))["status"] == 404


async def test_refused_request_leaves_no_key(gw: Harness) -> None:
    """NOT_ENOUGH_MONEY or INVALID_DATA leave no key: the retry is judged afresh."""
    client = await gw.client()
    await gw.add_user(client, LOGIN)
    withdrawal = {"login": LOGIN, "amount": -100.0}
    refused = await call(client, "BalanceOutSync", withdrawal, "refused-1")
    assert (refused["status"], refused["error"]) == (400, "NOT_ENOUGH_MONEY")
    await ok(client, "BalanceIn", {"login": LOGIN, "amount": 150.0}, "deposit-1")
    record = await ok(client, "BalanceOutSync", withdrawal, "refused-1")
    assert (record["login"], record["cmd"], record["profit"]) == (LOGIN, 8, -100.0)
    assert await money(client) == (50.0, 0.0)

    invalid = await call(client, "CreditInSync", {"login": LOGIN, "amount": 5.0}, "refused-2")
    assert (invalid["status"], invalid["error"]) == (400, "INVALID_DATA")
    fixed = await ok(client, "CreditInSync", {**CREDIT, "amount": 5.0}, "refused-2")
    assert fixed["profit"] == 5.0
    assert await money(client) == (50.0, 5.0)
    assert await trade_count(client) == 3


async def test_add_user_retry_answers_the_same_login(gw: Harness) -> None:
    """AddUser retried (allocated or explicit login) answers the same login; one account each."""
    client = await gw.client()
    user = dict(DEMO_USER)
    allocated = await ok(client, "AddUser", user, "user-1")
    assert await ok(client, "AddUser", user, "user-1") == allocated
    explicit = await ok(client, "AddUser", {**user, "login": LOGIN}, "user-2")
    assert explicit["login"] == LOGIN
    assert await ok(client, "AddUser", {**user, "login": LOGIN}, "user-2") == explicit
    assert (await client.request("AddUser", {**user, "login": LOGIN}))["error"] == "USER_EXISTS"
    problems, summary = gw.verification()
    assert problems == []
    assert summary.startswith("accounts=2 ")


async def test_keys_survive_a_restart(make_gateway: GatewayFactory) -> None:
    """After shutdown and restart on the same data dir, retries answer the first outcomes."""
    first_gw = await make_gateway()
    client = await first_gw.client()
    await first_gw.add_user(client, LOGIN)
    sync_record = await ok(client, "CreditInSync", CREDIT, "restart-1")
    ack = await ok(client, "BalanceIn", {"login": LOGIN, "amount": 70.0}, "restart-2")
    user = await ok(client, "AddUser", DEMO_USER, "restart-3")
    await first_gw.close_clients()
    await first_gw.gateway.shutdown()

    gw = await make_gateway(data_dir=first_gw.data_dir)
    client = await gw.client()
    assert await ok(client, "CreditInSync", CREDIT, "restart-1") == sync_record
    assert await ok(client, "BalanceIn", {"login": LOGIN, "amount": 70.0}, "restart-2") == ack
    assert await ok(client, "AddUser", DEMO_USER, "restart-3") == user
    assert await client.ok("GetTradeByOrder", {"order": sync_record["order"]}) == sync_record
    mismatch = await call(client, "CreditInSync", {**CREDIT, "amount": 1.0}, "restart-1")
    assert mismatch["error"] == "IDEMPOTENCY_MISMATCH"
    assert await money(client) == (70.0, 125.5)
    assert await trade_count(client) == 2
    problems, summary = gw.verification()
    assert problems == []
    assert summary.startswith("accounts=2 orders=2 ")


@SQLITE_ONLY
async def test_sync_retry_after_timeout_gets_the_completed_record(
    make_gateway: GatewayFactory,
) -> None:
    """A Sync request answered 504, retried after the commit, gets the completed record."""
    gw = await make_gateway(sync_timeout_ms=300, gated=True)
    client, probe = await gw.client(), await gw.client()
    await gw.add_user(probe, LOGIN)
    ledger(gw).hold()
    timed_out = await call(client, "CreditInSync", CREDIT, "late-1")
    assert (timed_out["status"], timed_out["error"]) == (504, "SYNC_TIMEOUT")
    order = timed_out["data"]["order"]
    ledger(gw).release()
    await wait_until(probe, lambda: gw.gateway.runtime.state.record(order) is not None)

    record = await ok(client, "CreditInSync", CREDIT, "late-1")
    assert record["order"] == order
    assert (record["login"], record["profit"], record["comment"]) == (LOGIN, 125.5, "bonus")
    assert await client.ok("GetTradeByOrder", {"order": order}) == record
    assert await money(probe) == (0.0, 125.5)
    assert await trade_count(probe) == 1
    assert gw.gateway.waiters.pending_count() == 0


async def test_key_expires_after_ttl(make_gateway: GatewayFactory) -> None:
    """Within idempotency_ttl_s a retry is answered from its key; past it, it is new."""
    clock = FakeClock()
    gw = await make_gateway(idempotency_ttl_s=60, clock=clock)
    token = gw.gateway.tokens.issue("1", SessionType.MANAGER, ["*"], int(clock.wall()) + 10**6)
    client = await gw.client(token=token)
    await gw.add_user(client, LOGIN)
    first = await ok(client, "CreditInSync", CREDIT, "ttl-1")
    clock.advance(59)
    assert await ok(client, "CreditInSync", CREDIT, "ttl-1") == first
    assert await money(client) == (0.0, 125.5)
    clock.advance(2)
    renewed = await ok(client, "CreditInSync", CREDIT, "ttl-1")
    assert renewed["order"] != first["order"]
    assert renewed["open_time"] == first["open_time"] + 61
    assert await ok(client, "CreditInSync", CREDIT, "ttl-1") == renewed
    assert await money(client) == (0.0, 251.0)
    assert await trade_count(client) == 2
    assert gw.verify() == []
