"""AccountEvents: each account's events reach the sessions once and in version order, whether
they come from the main loop or from other nodes, with gaps filled from the outbox and pruned
events counted. The outbox is a list here; tests/e2e/test_nodes.py and test_node_failover.py
run the same code on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

from manager_gateway.runtime.peers import AccountEvents
from manager_gateway.runtime.records import Account
from manager_gateway.runtime.state import State
from manager_gateway.runtime.storage import AccountEvent, PeerEvents, Snapshot

LOGIN = 1001


def account(version: int, balance: int = 0) -> Account:
    return Account(
        LOGIN, "demo", "n", "e", "p", 100, 1, "USD", 2, Decimal(balance), Decimal(0), 1, version
    )


def event(version: int) -> AccountEvent:
    return AccountEvent(LOGIN, version, 0, b'{"v":%d}' % version, account(version, version))


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
    """The ledger's side: `events_after` as PostgreSQL answers it, from what it still holds."""

    def __init__(self, kept: list[AccountEvent], current: Account) -> None:
        self.kept = kept
        self.current = current
        self.asked: list[dict[int, int]] = []

    async def peer_events(self) -> AsyncIterator[PeerEvents]:
        return  # no other node speaks in these tests
        yield

    async def events_after(
        self, known: dict[int, int], others: bool = False
    ) -> tuple[list[AccountEvent], list[Account]]:
        self.asked.append(dict(known))
        after = known.get(LOGIN, 0)
        newer = [e for e in self.kept if e.version > after]
        return newer, [self.current] if self.current.version > after else []


def setup(kept: list[AccountEvent], current: int) -> tuple[AccountEvents, Sessions, Outbox, State]:
    state = State(Snapshot({LOGIN: account(1)}, {}, [], [], 1, 1000), window=10)
    sessions, outbox = Sessions(), Outbox(kept, account(current, current))
    return AccountEvents(state, sessions, outbox), sessions, outbox, state  # type: ignore[arg-type]


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
    follower = asyncio.create_task(events.follow())
    try:
        events.own([event(3)])
        while len(sessions.trades) < 2:
            sessions.heard.clear()
            await asyncio.wait_for(sessions.heard.wait(), 5)
        assert sessions.trades == [b'{"v":2}', b'{"v":3}']
        assert outbox.asked == [{LOGIN: 1}]
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    assert not events.deliver(event(2))
