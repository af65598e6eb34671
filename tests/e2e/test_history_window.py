"""History on disk: with a window of a few rows, records, idempotency keys and settlement journal
rows must come back from the ledger, and every answer is the same as when they were in memory.

`history_window=WINDOW` keeps at most WINDOW of each in memory; each test pushes many times that
through, so the rows it asks about left memory long ago.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from manager_gateway.ledger.verify import verify_ledger
from manager_gateway.runtime import mainloop
from manager_gateway.runtime.storage import Found, Lookup, StorageError

from ..conftest import Client, GatewayFactory, Harness, captured_log, ledger, wait_until
from ..fakes import FakeClock, GatedLedger, storage_of
from ..platform import Platform, adjustment, base_url, cancellation, fund, settlement_gateway

WINDOW = 4
LOGINS = (7001, 7002, 7003)
TTL_S = 24 * 3600


class CountingLedger(GatedLedger):
    """The real ledger, counting the look-ups the main loop makes and the keys in them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fetches: list[Lookup] = []

    def fetch(self, lookup: Lookup) -> Found:
        self.fetches.append(lookup)
        if self.fail_next is not None:  # as a read error of the disk would
            error, self.fail_next = self.fail_next, None
            raise error
        return super().fetch(lookup)


async def windowed(make_gateway: GatewayFactory, tmp_path: Any, **settings: Any) -> Harness:
    data_dir = settings.pop("data_dir", tmp_path / "data")
    storage = CountingLedger(data_dir, "FULL")
    return await make_gateway(storage=storage, data_dir=data_dir, history_window=WINDOW, **settings)


async def started(
    make_gateway: GatewayFactory, tmp_path: Any, **settings: Any
) -> tuple[Harness, Client]:
    """A windowed gateway with the LOGINS accounts, and a client."""
    h = await windowed(make_gateway, tmp_path, **settings)
    client = await h.client(ttl_s=2 * TTL_S)  # a token that outlives the keys
    for login in LOGINS:
        await h.add_user(client, login)
    return h, client


def counting(h: Harness) -> CountingLedger:
    storage = storage_of(h.gateway.ledger)
    assert isinstance(storage, CountingLedger)
    return storage


async def spread(h: Harness, client: Client, count: int, prefix: str) -> list[dict[str, Any]]:
    """`count` BalanceIn over LOGINS, one at a time (one batch each); their acks in order."""
    acks = []
    for i in range(count):
        login = LOGINS[i % len(LOGINS)]
        data = {"login": login, "amount": 1 + i, "comment": f"{prefix}{i}"}
        acks.append(await client.ok("BalanceIn", data, ext_id=f"{prefix}{i}"))
    return acks


def assert_window_holds(h: Harness) -> None:
    state = h.gateway.runtime.state
    assert state.record_count <= WINDOW
    assert state.key_count <= WINDOW
    assert len(state.journal) <= WINDOW


async def test_reads_see_every_record_after_the_window_rolled_over(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    groups = [
        {"name": "demo", "currency": "USD", "digits": 2},
        {"name": "vip-eur", "currency": "EUR", "digits": 2},
    ]
    h, client = await started(make_gateway, tmp_path, groups=groups)
    acks = await spread(h, client, 30, "r")
    assert_window_holds(h)
    oldest = await client.ok("GetTradeByOrder", {"order": acks[0]["order"]})
    assert (oldest["order"], oldest["login"], oldest["profit"]) == (acks[0]["order"], 7001, 1.0)
    assert oldest["comment"] == "r0"
    everything = await client.ok("MngGetTradesByFilter", {})
    assert everything["count"] == 30
    assert [row["order"] for row in everything["rows"]] == [a["order"] for a in reversed(acks)]
    one_login = await client.ok("MngGetTradesByFilter", {"login": 7002, "offset": 2, "limit": 3})
    orders_7002 = [a["order"] for i, a in enumerate(acks) if i % 3 == 1]
    assert one_login["count"] == 10
    assert [row["order"] for row in one_login["rows"]] == list(reversed(orders_7002))[2:5]
    credit = await client.ok("MngGetTradesByFilter", {"cmd": 7})
    assert credit == {"rows": [], "count": 0}
    outsider = await h.client(groups=["vip*"])
    assert await outsider.ok("MngGetTradesByFilter", {}) == {"rows": [], "count": 0}
    missing = await client.request("GetTradeByOrder", {"order": 10_000})
    assert (missing["status"], missing["error"]) == (404, "TRADE_NOT_FOUND")
    # A session that sees some accounts only: the filter names its logins (here all three).
    await h.add_user(client, 7009, group="vip-eur")
    await client.ok("BalanceIn", {"login": 7009, "amount": 1})
    demo_only = await h.client(groups=["demo*"])
    seen = await demo_only.ok("MngGetTradesByFilter", {"limit": 100})
    assert seen["count"] == 30
    assert [row["order"] for row in seen["rows"]] == [a["order"] for a in reversed(acks)]


async def test_an_update_and_a_delete_of_an_old_record_apply_once(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    h, client = await started(make_gateway, tmp_path)
    acks = await spread(h, client, 20, "u")
    first, second = acks[0]["order"], acks[1]["order"]
    assert h.gateway.runtime.state.record(first) is None  # left the window
    await client.ok("BalanceIn", {"login": 7001, "amount": 50, "order": first})
    await client.ok("DeleteBalance", {"order": second}, ext_id="delete-old")
    assert (await client.ok("GetTradeByOrder", {"order": first}))["profit"] == 50.0
    assert (await client.ok("GetTradeByOrder", {"order": second}))["state"] == 6
    await spread(h, client, 10, "v")
    retried = await client.ok("DeleteBalance", {"order": second}, ext_id="delete-old")
    assert retried["order"] == second  # answered from its key on disk, not deleted twice
    again = await client.request("DeleteBalance", {"order": second})
    assert (again["status"], again["message"]) == (400, f"order {second} is already deleted")
    account = await client.ok("GetAccountByLogin", {"login": 7002})
    expected = (
        sum(1 + i for i in range(20) if i % 3 == 1)
        - 2
        + sum(1 + i for i in range(10) if i % 3 == 1)
    )
    assert account["balance"] == float(expected)
    assert verify_ledger(h.data_dir)[0] == []


async def test_old_records_named_in_one_batch_come_back_in_one_look_up(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    """Two old records updated in the same batch: one look-up names both, and both updates
    apply to the right record."""
    h, client = await started(make_gateway, tmp_path)
    acks = await spread(h, client, 20, "o")
    first, fourth = acks[0]["order"], acks[3]["order"]  # both of login 7001, long out of memory
    store, probe = ledger(h), await h.client()
    store.commit_started.clear()
    store.hold()  # the blocker's batch waits in its commit; the updates queue up as one batch
    blocker = client.send("BalanceIn", {"login": 7002, "amount": 1}, ext_id="blocker")
    assert await asyncio.to_thread(store.commit_started.wait, 5)
    before = len(counting(h).fetches)
    updates = [
        client.send("BalanceIn", {"login": 7001, "amount": 40, "order": first}, ext_id="u1"),
        client.send("BalanceIn", {"login": 7001, "amount": 70, "order": fourth}, ext_id="u4"),
    ]
    await wait_until(probe, lambda: h.gateway.runtime.queue_depth == len(updates))
    store.release()
    assert (await blocker)["status"] == 200
    assert [(await future)["status"] for future in updates] == [200, 200]
    assert [sorted(lookup.orders) for lookup in counting(h).fetches[before:]] == [
        sorted([first, fourth])
    ]
    assert (await client.ok("GetTradeByOrder", {"order": first}))["profit"] == 40.0
    assert (await client.ok("GetTradeByOrder", {"order": fourth}))["profit"] == 70.0
    account = await client.ok("GetAccountByLogin", {"login": 7001})
    assert account["balance"] == float(sum(1 + i for i in range(20) if i % 3 == 0) - 1 - 4 + 110)
    assert verify_ledger(h.data_dir)[0] == []


async def test_retries_answer_from_keys_on_disk_for_the_whole_ttl(
    make_gateway: GatewayFactory, tmp_path: Any, frozen_clock: FakeClock
) -> None:
    """A retry long after its key left memory, within the TTL, gets its first outcome and
    applies nothing; a changed retry is a mismatch; past the TTL the same extID is new."""
    h, client = await started(make_gateway, tmp_path, clock=frozen_clock)
    first = await client.ok(
        "CreditInSync", {"login": 7001, "amount": 9, "comment": "s"}, ext_id="s"
    )
    acks = await spread(h, client, 20, "k")
    assert h.gateway.runtime.state.key(("1", "k0")) is None
    frozen_clock.advance(23 * 3600)
    assert (
        await client.ok("BalanceIn", {"login": 7001, "amount": 1, "comment": "k0"}, ext_id="k0")
        == acks[0]
    )
    sync_retry = {"login": 7001, "amount": 9, "comment": "s"}
    assert await client.ok("CreditInSync", sync_retry, ext_id="s") == first
    changed = await client.request("BalanceIn", {"login": 7001, "amount": 2}, ext_id="k3")
    assert changed["error"] == "IDEMPOTENCY_MISMATCH"
    assert (await client.ok("MngGetTradesByFilter", {}))["count"] == 21
    frozen_clock.advance(3600)  # every key above is past the TTL now
    fresh = await client.ok("BalanceIn", {"login": 7001, "amount": 1, "comment": "k0"}, ext_id="k0")
    assert fresh["order"] == 22
    assert verify_ledger(h.data_dir)[0] == []


async def test_new_keys_cost_no_look_up_and_retries_one_per_batch(
    make_gateway: GatewayFactory, tmp_path: Any, frozen_clock: FakeClock
) -> None:
    """While no live key has left memory there is nothing to look up; after that, a batch of
    many operations is one look-up, not one per operation."""
    h, client = await started(make_gateway, tmp_path, clock=frozen_clock)
    await spread(h, client, WINDOW - len(LOGINS), "n")  # fills the key window, no more
    assert counting(h).fetches == []
    acks = await spread(h, client, 10, "m")
    before = len(counting(h).fetches)
    assert 1 <= before <= 10  # at most one per batch
    store, probe = ledger(h), await h.client()
    store.commit_started.clear()
    store.hold()  # the blocker's batch waits in its commit; the retries queue up as one batch
    blocker = client.send("BalanceIn", {"login": 7001, "amount": 1}, ext_id="blocker")
    assert await asyncio.to_thread(store.commit_started.wait, 5)
    retries = [
        client.send("BalanceIn", {"login": LOGINS[i % 3], "amount": 1 + i, "comment": f"m{i}"},
                    ext_id=f"m{i}")
        for i in range(10)  # m0 to m6 left memory; m7 to m9 are among the newest four
    ]  # fmt: skip
    await wait_until(probe, lambda: h.gateway.runtime.queue_depth == len(retries))
    store.release()
    assert (await blocker)["status"] == 200
    assert [(await future)["data"] for future in retries] == acks
    lookups = counting(h).fetches[before:]
    # The blocker's key, then only the seven retries' keys that memory lacks.
    assert [sorted(lookup.keys) for lookup in lookups] == [
        [("1", "blocker")],
        sorted(("1", f"m{i}") for i in range(7)),
    ]


async def test_a_restart_with_exactly_a_window_of_keys_holds_them_all(
    make_gateway: GatewayFactory, tmp_path: Any, frozen_clock: FakeClock
) -> None:
    """A ledger with exactly WINDOW live keys comes back whole into memory: nothing is left on
    disk to look up, so a new key after the restart costs no look-up, as before it."""
    h, client = await started(make_gateway, tmp_path, clock=frozen_clock)
    (ack,) = await spread(h, client, WINDOW - len(LOGINS), "n")  # fills the key window, no more
    await h.close_clients()
    await h.gateway.shutdown()
    again = await windowed(make_gateway, tmp_path, data_dir=h.data_dir, clock=frozen_clock)
    client = await again.client(ttl_s=2 * TTL_S)
    assert again.gateway.runtime.state.key_count == WINDOW
    data = {"login": LOGINS[0], "amount": 1, "comment": "n0"}
    assert await client.ok("BalanceIn", data, ext_id="n0") == ack
    await client.ok("BalanceIn", {"login": LOGINS[0], "amount": 5}, ext_id="fresh")
    assert counting(again).fetches == [], counting(again).fetches


async def test_sync_retry_after_504_is_answered_after_its_key_left_memory(
    make_gateway: GatewayFactory, tmp_path: Any, frozen_clock: FakeClock
) -> None:
    h, client = await started(make_gateway, tmp_path, clock=frozen_clock, sync_timeout_ms=1000)
    store = ledger(h)
    store.commit_started.clear()
    store.hold()
    data = {"login": 7003, "amount": 5, "comment": "late"}
    pending = client.send("CreditInSync", data, ext_id="late")
    assert await asyncio.to_thread(store.commit_started.wait, 5)
    frozen_clock.advance(1.0)
    answer = await pending
    assert (answer["status"], answer.get("error")) == (504, "SYNC_TIMEOUT"), answer
    order = answer["data"]["order"]
    store.release()
    await spread(h, client, 12, "p")
    assert h.gateway.runtime.state.key(("1", "late")) is None
    record = await client.ok("CreditInSync", data, ext_id="late")
    assert (record["order"], record["profit"]) == (order, 5.0)
    assert (await client.ok("GetTradeByOrder", {"order": order}))["profit"] == 5.0


async def test_settlement_cancels_and_replays_find_their_rows_on_disk(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    h = await settlement_gateway(make_gateway, history_window=WINDOW)
    client = await h.client()
    await fund(client, h, 7101, credit=1000)
    async with aiohttp.ClientSession() as session:
        platform = Platform(base_url(h), session)
        first = adjustment(7101, "10.00")
        answered = await platform.adjust(first)
        for _ in range(3 * WINDOW):
            assert (await platform.adjust(adjustment(7101, "1.00")))["code"] == "0"
        assert (await platform.cancel(cancellation(7101, "gone", "1.00")))["code"] == "US_0000002"
        for _ in range(3 * WINDOW):
            assert (await platform.adjust(adjustment(7101, "1.00")))["code"] == "0"
        assert len(h.gateway.runtime.state.journal) <= WINDOW
        replay = await platform.adjust(first)
        assert (replay["code"], replay["data"]) == (answered["code"], answered["data"])
        cancelled = await platform.cancel(cancellation(7101, first["requestUniqueNo"], "10.00"))
        assert cancelled["code"] == "0"
        assert await platform.wallet(7101) == f"{1000 - 6 * WINDOW:.2f}"
        late = await platform.adjust(adjustment(7101, "1.00", requestUniqueNo="gone"))
        assert late["code"] == "REQUEST_CANCELLED"
    # After a restart the rows beyond the window are still known to be on disk.
    await h.close_clients()
    await h.gateway.shutdown()
    again = await settlement_gateway(make_gateway, data_dir=h.data_dir, history_window=WINDOW)
    async with aiohttp.ClientSession() as session:
        platform = Platform(base_url(again), session)
        replay = await platform.adjust(first)
        assert (replay["code"], replay["data"]) == (answered["code"], answered["data"])
        assert await platform.wallet(7101) == f"{1000 - 6 * WINDOW:.2f}"
    assert verify_ledger(again.data_dir)[0] == []


async def test_a_cancel_reverses_a_record_that_left_the_window_before_its_journal_row(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    """The adjustment's journal row is still in memory but its record is not (TCP traffic rolled
    the records): the cancel's look-up fetches the record the row names."""
    h = await settlement_gateway(make_gateway, history_window=WINDOW)
    client = await h.client()
    await fund(client, h, 7101, credit=1000)
    await h.add_user(client, 7102)
    async with aiohttp.ClientSession() as session:
        platform = Platform(base_url(h), session)
        opened = adjustment(7101, "10.00")
        order = (await platform.adjust(opened))["data"]["order"]
        for i in range(2 * WINDOW):
            await client.ok("BalanceIn", {"login": 7102, "amount": 1 + i})
        state = h.gateway.runtime.state
        assert state.record(order) is None and len(state.journal) == 1
        cancel = await platform.cancel(cancellation(7101, opened["requestUniqueNo"], "10.00"))
        assert (cancel["code"], cancel["data"]["order"]) == ("0", order)
        assert await platform.wallet(7101) == "1000.00"
    assert verify_ledger(h.data_dir)[0] == []


async def test_a_restart_after_many_roll_overs_answers_old_retries(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    h, client = await started(make_gateway, tmp_path)
    acks = await spread(h, client, 40, "z")
    await h.close_clients()
    await h.gateway.shutdown()
    again = await windowed(make_gateway, tmp_path, data_dir=h.data_dir)
    assert_window_holds(again)
    client = await again.client()
    for i in (0, 17, 39):
        data = {"login": LOGINS[i % 3], "amount": 1 + i, "comment": f"z{i}"}
        assert await client.ok("BalanceIn", data, ext_id=f"z{i}") == acks[i]
    assert (await client.ok("MngGetTradesByFilter", {}))["count"] == 40
    assert verify_ledger(again.data_dir)[0] == []


async def test_a_failed_look_up_refuses_its_batch_and_applies_nothing(
    make_gateway: GatewayFactory, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger cannot be read for a batch's older rows: every operation of that batch is
    answered 500 with nothing applied and no key kept, and the operator's log says why; the
    next batch goes on as usual."""
    h, client = await started(make_gateway, tmp_path)
    acks = await spread(h, client, 12, "f")
    before = await client.ok("GetAccountByLogin", {"login": 7001})
    counting(h).fail_next = StorageError("ledger read failed: disk I/O error")
    retry = {"login": 7001, "amount": 1, "comment": "f0"}
    with captured_log(monkeypatch, mainloop) as logs:
        refused = await client.request("BalanceIn", retry, ext_id="f0")
    assert [entry for entry in logs if entry["event"] == "ledger_read_failed"] == [
        {
            "event": "ledger_read_failed",
            "error": "ledger read failed: disk I/O error",
            "operations": 1,
            "log_level": "error",
        }
    ]
    assert (refused["status"], refused["error"]) == (500, "INTERNAL_ERROR")
    assert refused["message"] == "the ledger could not be read; nothing was applied"
    assert await client.ok("GetAccountByLogin", {"login": 7001}) == before
    assert await client.ok("BalanceIn", retry, ext_id="f0") == acks[0]  # its key, once more
    new = await client.ok("BalanceIn", {"login": 7001, "amount": 2}, ext_id="f-new")
    assert new["order"] == 13
    assert verify_ledger(h.data_dir)[0] == []


async def test_a_shutdown_that_gives_up_on_a_hung_look_up_answers_its_batch_503(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    """The ledger stops answering the read a batch needs, and the drain's time runs out: the
    batch is answered 503 SHUTTING_DOWN (not left hanging), and nothing of it is applied."""
    h, client = await started(make_gateway, tmp_path, shutdown_timeout_s=0.2)
    acks = await spread(h, client, 12, "s")
    store = counting(h)
    store.hold_fetches()
    update = client.send("BalanceIn", {"login": 7001, "amount": 9, "order": acks[0]["order"]})
    assert await asyncio.to_thread(store.fetch_started.wait, 5)
    await asyncio.wait_for(h.gateway.shutdown(), 10)
    assert not h.gateway.ledger_finished
    answer = await asyncio.wait_for(update, 10)
    assert (answer["status"], answer["error"]) == (503, "SHUTTING_DOWN"), answer
    store.close()  # lets the stuck look-up finish, as the process's exit would
    assert verify_ledger(h.data_dir)[0] == []


async def test_retries_alone_do_not_grow_memory(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    """Batches of nothing but retries of old keys commit nothing, yet what they fetched back
    leaves memory again: a client replaying its history cannot grow the gateway."""
    h, client = await started(make_gateway, tmp_path)
    acks = await spread(h, client, 30, "g")
    for i in range(25):
        data = {"login": LOGINS[i % 3], "amount": 1 + i, "comment": f"g{i}"}
        assert await client.ok("BalanceIn", data, ext_id=f"g{i}") == acks[i]
        assert_window_holds(h)
    deleted = await client.ok("DeleteBalance", {"order": acks[0]["order"]}, ext_id="g-del")
    for _ in range(3):  # a retry that fetches the key and the record it names
        assert (
            await client.ok("DeleteBalance", {"order": acks[0]["order"]}, ext_id="g-del") == deleted
        )
        await spread(h, client, WINDOW, "h")
        assert_window_holds(h)
