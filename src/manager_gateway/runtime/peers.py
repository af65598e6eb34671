"""Events in account order on every node of a shared ledger.

Several nodes commit to one database; each node's sessions must see every account's events, in
the order they were committed, once. Each change of an account carries the account's `version`,
assigned under its row lock, so versions order an account's events the same way on every node.

`AccountEvents` remembers, per account, the last version this node delivered, and hands the
sessions an event only when it is the next one. The node's own commits (from the main loop) and
other nodes' (from the ledger's feed) go into one inbox, taken in order by one task: a version
already delivered is dropped (both sources may bring an event), and a version beyond the next
is a gap, filled from the ledger's outbox before going on. A gap is normal: a batch reads its
accounts as the database has them, so it may commit version 13 before this node has heard of
another node's 12.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from .storage import AccountEvent, Ledger, PeerEvents

if TYPE_CHECKING:
    from .mainloop import EventSink
    from .state import State

log = structlog.get_logger("manager_gateway.peers")


class AccountEvents:
    def __init__(self, state: State, sink: EventSink, ledger: Ledger) -> None:
        self._state = state
        self._sink = sink
        self._ledger = ledger
        self._delivered = {login: a.version for login, a in state.accounts.items()}
        self._inbox: asyncio.Queue[PeerEvents] = asyncio.Queue()
        self.lost_events = 0  # pruned from the outbox before this node caught up

    def own(self, events: list[AccountEvent]) -> None:
        """The node's own events of a batch just committed, in commit order."""
        self._inbox.put_nowait(PeerEvents(events))

    def deliver(self, event: AccountEvent) -> bool:
        """Hand `event` to the sessions if it is its account's next; False if already done."""
        if event.version <= self._delivered.get(event.login, 0):
            return False
        self._delivered[event.login] = event.version
        held = self._state.accounts.get(event.login)
        if held is None or held.version < event.version:
            self._state.accounts[event.login] = event.account
        if event.event_type is not None and event.data_json is not None:
            self._sink.trade_event(event.event_type, event.account, event.data_json)
            self._sink.balance_event(event.account)
        return True

    async def follow(self) -> None:
        """Deliver what the inbox brings, in order (a task, for as long as the node runs)."""
        feed = asyncio.create_task(self._listen(), name="peer-feed")
        try:
            while True:
                batch = await self._inbox.get()
                try:
                    if batch.catch_up:  # accounts this node never saw included
                        await self._fill(dict(self._delivered), others=True)
                    else:
                        await self._take(batch.events)
                except Exception:  # a read failed: the next gap or catch-up brings these again
                    log.exception("peer_events_failed", catch_up=batch.catch_up)
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed

    async def _listen(self) -> None:
        """Other nodes' events, as the ledger's feed brings them, into the inbox."""
        async for batch in self._ledger.peer_events():
            self._inbox.put_nowait(batch)

    async def _take(self, events: list[AccountEvent]) -> None:
        gaps: dict[int, int] = {}
        for event in events:
            last = self._delivered.get(event.login, 0)
            if event.version > last + 1:
                gaps.setdefault(event.login, last)
        if gaps:
            await self._fill(gaps)  # everything up to now, this batch's events included
        for event in events:
            self.deliver(event)

    async def _fill(self, known: dict[int, int], others: bool = False) -> None:
        """Deliver what the outbox holds beyond `known`, in order. Events pruned from it before
        this node caught up (it was cut off from the database for longer than the outbox keeps
        them) are skipped, counted and logged, and the account is brought up to date."""
        events, accounts = await self._ledger.events_after(known, others)
        for event in events:
            self._skip_to(event.login, event.version - 1)
            self.deliver(event)
        for account in accounts:
            if self._skip_to(account.login, account.version):
                self._state.accounts[account.login] = account

    def _skip_to(self, login: int, version: int) -> bool:
        """Count the versions of `login` up to `version` that can no longer be delivered."""
        last = self._delivered.get(login, 0)
        if version <= last:
            return False
        self.lost_events += version - last
        log.warning("peer_events_lost", login=login, delivered=last, lost=version - last)
        self._delivered[login] = version
        return True
