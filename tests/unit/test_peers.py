"""AccountEvents: each account's events reach the sessions once and in version order, whether
they come from the main loop or from other nodes, with gaps filled from the outbox and pruned
events counted. The outbox is a list here; tests/e2e/test_nodes.py and test_node_failover.py
run the same code on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from manager_gateway.runtime import peers
from manager_gateway.runtime.peers import AccountEvents
from manager_gateway.runtime.records import Account
from manager_gateway.runtime.state import State
from manager_gateway.runtime.storage import AccountEvent, PeerEvents, Snapshot, StorageError

from ..conftest import captured_log

LOGIN = 1001


def account(version: int, balance: int = 0, login: int = LOGIN) -> Account:
    return Account(
        login, "demo", "n", "e", "p", 100, 1, "USD", 2, Decimal(balance), Decimal(0), 1, version
    )


def event(version: int, login: int = LOGIN) -> AccountEvent:
    data = b'{"v":%d}' % version if login == LOGIN else b'{"l":%d,"v":%d}' % (login, version)
    return AccountEvent(login, version, 0, data, account(version, version, login))


class Sessions:
    """The event sink: what the sessions were sent, in order."""

    def __init__(self) -> None:
        self.trades: list[bytes] = []
        self.balances: list[Decimal] = []
        self.heard = asyncio.Event()  # set at each trade event

    def trade_event(self, event_type: int, account: Account, data_json: bytes) -> None:
        self.trades.append(data_json)
        self.heard.set()

    def balance_event(self, account: Account) -> None:
        self.balances.append(account.balance)


class Outbox:
    """The ledger's side, as PostgreSQL answers it: `events_after` from what the outbox still
    holds (`kept`, any logins) and the accounts as they are (`current`); `peer_events` hands
    over `feed`, then ends."""

    def __init__(self, kept: list[AccountEvent], current: list[Account]) -> None:
        self.kept = kept
        self.current = {a.login: a for a in current}
        self.feed: list[PeerEvents] = []
        self.asked: list[dict[int, int]] = []
        self.fail_next = False

    async def peer_events(self) -> AsyncIterator[PeerEvents]:
        for batch in self.feed:
            yield batch

    async def events_after(
        self, known: dict[int, int], others: bool = False
    ) -> tuple[list[AccountEvent], list[Account]]:
        if self.fail_next:
            self.fail_next = False
            raise StorageError("ledger read failed: the database went away")
        self.asked.append(dict(known))
        wanted = set(known) | (set(self.current) if others else set())
        events = [e for e in self.kept if e.login in wanted and e.version > known.get(e.login, 0)]
        accounts = [
            a for login, a in self.current.items()
            if login in wanted and a.version > known.get(login, 0)
        ]  # fmt: skip
        return sorted(events, key=lambda e: (e.login, e.version)), accounts


def setup(kept: list[AccountEvent], current: int) -> tuple[AccountEvents, Sessions, Outbox, State]:
    """The node holds LOGIN at version 1; the database has it at `current`."""
    state = State(Snapshot({LOGIN: account(1)}, {}, [], [], 1, 1000), window=10)
    sessions, outbox = Sessions(), Outbox(kept, [account(current, current)])
    return AccountEvents(state, sessions, outbox), sessions, outbox, state  # type: ignore[arg-type]


async def following(events: AccountEvents, sessions: Sessions, trades: int) -> None:
    """Run the inbox's task until the sessions have heard `trades` trade events."""
    follower = asyncio.create_task(events.follow())
    try:
        while len(sessions.trades) < trades:
            sessions.heard.clear()
            await asyncio.wait_for(sessions.heard.wait(), 5)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


def test_each_version_is_delivered_once_in_order_whoever_brings_it() -> None:
    events, sessions, _, state = setup([], 1)
    assert events.deliver(event(2))
    assert not events.deliver(event(2))  # the main loop and the feed both brought it
    assert not events.deliver(event(1))  # older than what was delivered
    assert events.deliver(event(3))
    assert sessions.trades == [b'{"v":2}', b'{"v":3}']
    assert sessions.balances == [2, 3]
    assert state.accounts[LOGIN].version == 3  # reads follow the newest version


async def test_a_gap_is_filled_from_the_outbox_before_going_on() -> None:
    events, sessions, outbox, _ = setup([event(2), event(3), event(4)], 4)
    await events._take([event(4)])  # 2 and 3 were never notified
    assert outbox.asked == [{LOGIN: 1}]
    assert sessions.trades == [b'{"v":2}', b'{"v":3}', b'{"v":4}']
    assert events.lost_events == 0


async def test_the_next_version_needs_no_read() -> None:
    events, sessions, outbox, _ = setup([], 2)
    await events._take([event(2)])
    assert outbox.asked == []
    assert sessions.trades == [b'{"v":2}']


async def test_events_pruned_before_a_catch_up_are_counted_and_the_account_brought_up() -> None:
    # The outbox kept only 5 and 6 of versions 2..6; the account is at 7 (its event pruned too
    # would be odd, but its row is what stands).
    events, sessions, _, state = setup([event(5), event(6)], 7)
    await events._fill({LOGIN: 1}, others=True)
    assert sessions.trades == [b'{"v":5}', b'{"v":6}']
    assert events.lost_events == 3 + 1  # 2, 3 and 4 before 5; 7 after 6
    assert state.accounts[LOGIN].version == 7
    assert not events.deliver(event(7))  # counted as lost: not delivered late either


async def test_an_own_commit_ahead_of_an_unheard_one_waits_for_it() -> None:
    """The node's batch read the account at version 2, committed by another node whose
    notification has not arrived, and committed 3: the sessions get 2 (from the outbox) first,
    then 3, and 2 again from the late notification is dropped."""
    events, sessions, outbox, _ = setup([event(2), event(3)], 3)
    events.own([event(3)])
    await following(events, sessions, 2)
    assert sessions.trades == [b'{"v":2}', b'{"v":3}']
    assert outbox.asked == [{LOGIN: 1}]
    assert not events.deliver(event(2))


async def test_a_catch_up_delivers_what_was_missed_and_accounts_never_seen() -> None:
    """After the feed (re)connects: every account the node knows, from what it delivered, and
    with them the accounts another node created meanwhile."""
    events, sessions, outbox, state = setup([event(2), event(1, 2002), event(2, 2002)], 2)
    outbox.current[2002] = account(2, 2, 2002)
    outbox.feed = [PeerEvents([], catch_up=True)]
    await following(events, sessions, 3)
    assert outbox.asked == [{LOGIN: 1}]  # what it had delivered, all of it
    assert sessions.trades == [b'{"v":2}', b'{"l":2002,"v":1}', b'{"l":2002,"v":2}']
    assert state.accounts[2002].version == 2  # the new account, for the node's reads


def test_a_new_account_s_first_event_is_delivered() -> None:
    events, sessions, _, state = setup([], 1)
    assert events.deliver(event(1, 2002))  # AddUser on another node: its first version is 1
    assert state.accounts[2002] == account(1, 1, 2002)
    assert sessions.trades == [b'{"l":2002,"v":1}']


async def test_a_new_account_s_missed_first_event_is_fetched_before_its_second() -> None:
    events, sessions, outbox, _ = setup([event(1, 2002), event(2, 2002)], 1)
    await events._take([event(2, 2002)])
    assert outbox.asked == [{2002: 0}]
    assert sessions.trades == [b'{"l":2002,"v":1}', b'{"l":2002,"v":2}']


def test_memory_keeps_the_newer_account_when_an_older_event_arrives_late() -> None:
    """The node's own commit put version 3 in memory before another node's 2 was delivered."""
    events, _, _, state = setup([], 1)
    state.accounts[LOGIN] = account(3, 30)
    assert events.deliver(event(2))
    assert state.accounts[LOGIN] == account(3, 30)


async def test_a_failed_read_is_logged_and_the_next_batch_still_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, sessions, outbox, _ = setup([event(2), event(3)], 3)
    outbox.fail_next = True
    outbox.feed = [PeerEvents([], catch_up=True), PeerEvents([event(3)])]
    with captured_log(monkeypatch, peers) as logs:
        await following(events, sessions, 2)
    assert [(e["event"], e["catch_up"], e["log_level"]) for e in logs] == [
        ("peer_events_failed", True, "error")
    ]
    assert sessions.trades == [b'{"v":2}', b'{"v":3}']  # the gap of the next batch filled it


async def test_lost_events_are_logged_with_what_was_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    events, _, _, _ = setup([event(5)], 5)
    with captured_log(monkeypatch, peers) as logs:
        await events._fill({LOGIN: 1})
    assert logs == [
        {
            "event": "peer_events_lost",
            "log_level": "warning",
            "login": LOGIN,
            "delivered": 1,
            "lost": 3,  # versions 2, 3 and 4
        }
    ]


async def test_events_of_an_account_never_seen_pruned_before_a_catch_up_are_all_counted() -> None:
    """Another node created 2002 and changed it three times while this one was cut off for
    longer than the outbox keeps events: versions 1 to 3 are lost, the 4th is delivered."""
    events, sessions, outbox, state = setup([event(4, 2002)], 1)
    outbox.current[2002] = account(4, 4, 2002)
    await events._fill({LOGIN: 1}, others=True)
    assert events.lost_events == 3
    assert sessions.trades == [b'{"l":2002,"v":4}']
    assert state.accounts[2002].version == 4
