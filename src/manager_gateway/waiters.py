"""The one registry of deferred Sync responses (docs/protocol.md section 6).

A waiter is registered before its operation reaches the main loop; the main loop binds it to the
reserved `order` and awaited event type before the event can fire; the first of event, rejection,
timeout or session close settles its future, and the handler removes it in `finally`. Every path
guards with `done()`, so a late event or a second settlement is dropped quietly.

Every waiter has the same timeout, so deadlines come in registration order: the registry keeps
them in one FIFO with a single timer for the oldest, instead of a loop timer per request (a
timer handle and a heap push and cancel for each of tens of thousands of requests a second).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable

import structlog

from .clock import Cancellable, Clock
from .protocol.errors import GatewayError, SyncTimeout

log = structlog.get_logger("manager_gateway.waiters")


class SessionGone(Exception):
    """The requesting session closed; the answer has nowhere to go."""


class Waiter:
    """One pending Sync request. `future` resolves to the matching event's encoded `data`."""

    __slots__ = ("deadline", "event_type", "ext_id", "future", "order", "removed", "session")

    def __init__(
        self, session: Hashable, ext_id: str, future: asyncio.Future[bytes], deadline: float
    ) -> None:
        self.session = session
        self.ext_id = ext_id
        self.future = future
        self.deadline = deadline  # on the clock's monotonic time
        self.order: int | None = None
        self.event_type: int | None = None
        self.removed = False


class WaiterRegistry:
    """Owns every waiter: by order for matching events, by session for cleanup."""

    def __init__(self, clock: Clock, timeout_ms: int) -> None:
        self._clock = clock
        self._timeout_s = timeout_ms / 1000
        self._by_order: dict[int, list[Waiter]] = {}
        self._by_session: dict[Hashable, set[Waiter]] = {}
        # Oldest first. Removed waiters leave lazily, when they reach the front; since answers
        # come roughly in order, the queue stays about as long as the number pending.
        self._deadlines: deque[Waiter] = deque()
        self._timer: Cancellable | None = None
        # Running counts as plain ints, so the metrics thread reads them without iterating the
        # dicts above while the loop changes them. `pending` always equals `pending_count()`.
        self.pending = 0
        self.timeouts = 0

    def register(self, session: Hashable, ext_id: str) -> Waiter:
        """A new waiter whose timeout starts now."""
        deadline = self._clock.monotonic() + self._timeout_s
        waiter = Waiter(session, ext_id, asyncio.get_running_loop().create_future(), deadline)
        self._deadlines.append(waiter)
        if self._timer is None:
            self._timer = self._clock.call_later(self._timeout_s, self._expire_due)
        self._by_session.setdefault(session, set()).add(waiter)
        self.pending += 1
        return waiter

    def _expire_due(self) -> None:
        """The timer: time out every waiter whose deadline has passed, then re-arm for the next."""
        self._timer = None
        now = self._clock.monotonic()
        deadlines = self._deadlines
        expired = 0
        while deadlines:
            waiter = deadlines[0]
            if not waiter.removed and waiter.deadline > now:
                self._timer = self._clock.call_later(waiter.deadline - now, self._expire_due)
                break
            deadlines.popleft()
            if not waiter.removed and not waiter.future.done():
                self._expire(waiter)
                expired += 1
        if expired:
            # One line per sweep, not per request: a stalled ledger times out thousands at once.
            log.warning("sync_timeouts", expired=expired)

    def bind(self, waiter: Waiter, order: int, event_type: int) -> None:
        """Called by the main loop once it reserved `order`, before the event can be emitted."""
        if waiter.future.done() or waiter.order is not None:
            return
        waiter.order, waiter.event_type = order, event_type
        self._by_order.setdefault(order, []).append(waiter)

    def on_trade_event(self, event_type: int, order: int, data_json: bytes) -> None:
        """Answer every waiter bound to this order and event type."""
        waiters = self._by_order.get(order)
        if not waiters:
            return
        remaining = []
        for waiter in waiters:
            if waiter.event_type == event_type:
                self.resolve(waiter, data_json)
            else:
                remaining.append(waiter)
        if remaining:
            self._by_order[order] = remaining
        else:
            del self._by_order[order]

    def resolve(self, waiter: Waiter, data_json: bytes) -> None:
        if not waiter.future.done():
            waiter.future.set_result(data_json)

    def reject(self, waiter: Waiter, error: BaseException) -> None:
        if not waiter.future.done():
            waiter.future.set_exception(error)

    def _expire(self, waiter: Waiter) -> None:
        """Time out a waiter `_expire_due` found still pending."""
        self.timeouts += 1
        data = {"order": waiter.order} if waiter.order is not None else None
        self.reject(waiter, SyncTimeout(data=data))

    def remove(self, waiter: Waiter) -> None:
        """Forget a waiter (the handler's `finally`); safe to call more than once."""
        if waiter.removed:
            return
        waiter.removed = True
        self.pending -= 1
        deadlines = self._deadlines
        while deadlines and deadlines[0].removed:
            deadlines.popleft()
        if not deadlines and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not waiter.future.done():
            waiter.future.cancel()
        session_waiters = self._by_session.get(waiter.session)
        if session_waiters is not None:
            session_waiters.discard(waiter)
            if not session_waiters:
                del self._by_session[waiter.session]
        if waiter.order is not None:
            bound = self._by_order.get(waiter.order)
            if bound is not None and waiter in bound:
                bound.remove(waiter)
                if not bound:
                    del self._by_order[waiter.order]

    def fail_session(self, session: Hashable) -> None:
        """The session closed: settle and drop its waiters; their operations go on."""
        for waiter in list(self._by_session.get(session, ())):
            self.reject(waiter, SessionGone())
            self.remove(waiter)

    def fail_all(self, error: GatewayError) -> None:
        """Shutdown: answer every waiter with `error` and drop it."""
        for session in list(self._by_session):
            for waiter in list(self._by_session.get(session, ())):
                self.reject(waiter, error)
                self.remove(waiter)

    def pending_count(self) -> int:
        return sum(len(waiters) for waiters in self._by_session.values())

    def deadline_queue_length(self) -> int:
        """Entries in the timeout queue, removed ones not yet dropped included (leak checks)."""
        return len(self._deadlines)

    def bound_count(self) -> int:
        return sum(len(waiters) for waiters in self._by_order.values())
