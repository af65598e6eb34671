"""A seeded simulation of Sync waiters against a hostile main loop, on the fake clock.

Many requests from several sessions register waiters the way `RequestContext.start_sync` does
(a done-callback that calls `remove`); a simulated main loop binds them, then emits, drops,
duplicates, delays and reorders their trade events, emits strays and wrong event types, rejects
operations; sessions close, the clock jumps by random amounts and the gateway sometimes shuts
down. After every step, a model of what each action may settle is checked against what the
registry did, and nothing may be left over at the end.

Extra seeds: `WAITER_SIM_SEEDS=1,2,3 pytest tests/unit/test_waiter_simulation.py`.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest

from manager_gateway.protocol.errors import NotEnoughMoney, ShuttingDown, SyncTimeout
from manager_gateway.waiters import SessionGone, Waiter, WaiterRegistry
from tests.fakes import FakeClock, _Timer

TIMEOUT_MS = 5000
TIMEOUT_S = TIMEOUT_MS / 1000
EVENT_TYPES = (0, 1, 2)  # EV_RECORD_ADD, EV_RECORD_UPDATE, EV_RECORD_DELETE
SESSIONS = 4
STEPS = 400
# The timer fires at the front waiter's deadline, re-armed as `now + (deadline - now)`: equal
# to the deadline up to float rounding, never earlier than it.
LATENESS_S = 1e-9
SEEDS = list(range(20)) + [
    int(seed) for seed in os.environ.get("WAITER_SIM_SEEDS", "").split(",") if seed.strip()
]

ANSWERED, REJECTED, TIMED_OUT, SESSION_GONE, SHUT_DOWN = (
    "answered",
    "rejected",
    "timed out",
    "session gone",
    "shut down",
)


@dataclass(eq=False)
class Request:
    """One Sync request as the simulated client and main loop see it."""

    rid: int
    session: tuple[int, int]  # (client, connection generation): a closed session never returns
    waiter: Waiter
    deadline: float
    order: int | None = None  # the order the main loop reserved for it
    event_type: int | None = None
    bound: bool = False  # bind() reached the registry while the waiter was still pending
    rejection: BaseException | None = None
    outcome: str | None = None
    ended_at: float | None = None


@dataclass
class Event:
    order: int
    event_type: int
    due: float = 0.0  # for a delayed event: not emitted before this time


class SimClock(FakeClock):
    """The fake clock, telling the simulation after each timer it runs, at that instant."""

    def __init__(self) -> None:
        super().__init__()
        self.after_timer: Callable[[], None] = lambda: None

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> _Timer:
        def run() -> None:
            callback()
            self.after_timer()

        return super().call_later(delay_s, run)


class Simulation:
    """The registry, the requests, the main loop's queues, and the checks between steps."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = SimClock()
        self.clock.after_timer = self.observe_timer
        self.registry = WaiterRegistry(self.clock, TIMEOUT_MS)
        self.generation = [0] * SESSIONS
        self.requests: list[Request] = []
        self.live: dict[int, Request] = {}  # not yet ended, by rid
        self.intake: list[Request] = []  # registered, not yet taken by the main loop
        self.outbox: list[Event] = []  # applied operations whose event is still to come
        self.delayed: list[Event] = []
        self.bound_by_order: dict[int, list[Request]] = {}
        self.next_order = 1000
        self.event_seq = 0
        self.step = -1
        self.action = "start"
        self.trace: list[str] = []

    # -- checking ------------------------------------------------------------------------------

    def fail(self, message: str) -> None:
        recent = "; ".join(self.trace[-12:])
        raise AssertionError(
            f"seed {self.seed}, step {self.step} ({self.action}) at t={self.clock.now}: "
            f"{message}\n  last actions: {recent}"
        )

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.fail(message)

    def classify(self, request: Request) -> str:
        future = request.waiter.future
        if future.cancelled():
            self.fail(f"request {request.rid} was cancelled: no such outcome for a Sync request")
        error = future.exception()
        if error is None:
            return ANSWERED
        if isinstance(error, SyncTimeout):
            return TIMED_OUT
        if isinstance(error, SessionGone):
            return SESSION_GONE
        if isinstance(error, ShuttingDown):
            return SHUT_DOWN
        return REJECTED

    def collect_ended(self) -> list[Request]:
        """Record every live request whose future settled since the last look, at `now`."""
        ended = []
        for request in list(self.live.values()):
            if request.waiter.future.done():
                request.outcome = self.classify(request)
                request.ended_at = self.clock.now
                del self.live[request.rid]
                ended.append(request)
        return ended

    def observe_timer(self) -> None:
        """Right after a timer ran: whatever it settled must be a timeout, due exactly now."""
        now = self.clock.now
        for request in self.collect_ended():
            self.check(
                request.outcome == TIMED_OUT,
                f"the timer ended request {request.rid} as {request.outcome}",
            )
            self.check(
                now >= request.deadline,
                f"request {request.rid} timed out at {now}, before its deadline {request.deadline}",
            )
            self.check(
                now - request.deadline <= LATENESS_S,
                f"request {request.rid} timed out at {now}, late for {request.deadline}",
            )
            error = request.waiter.future.exception()
            assert isinstance(error, SyncTimeout)
            expected = {"order": request.order} if request.bound else None
            self.check(
                error.data == expected,
                f"request {request.rid} timed out with data {error.data}, expected {expected}",
            )

    def expect_ended(self, expected: dict[int, str]) -> list[Request]:
        """The step's own action settled exactly `expected` (rid -> outcome), nothing else."""
        ended = self.collect_ended()
        got = {request.rid: request.outcome for request in ended}
        self.check(got == expected, f"ended {got}, expected {expected}")
        return ended

    async def settle_callbacks(self) -> None:
        """Let the done-callbacks (`remove`) run; they forget waiters but must settle none."""
        await asyncio.sleep(0)
        self.expect_ended({})

    def check_deadlines(self) -> None:
        for request in self.live.values():
            self.check(
                request.deadline > self.clock.now,
                f"request {request.rid} outlived its deadline {request.deadline}",
            )

    def check_registry(self) -> None:
        """With the callbacks run: the registry holds exactly the live requests, one timer."""
        self.check_deadlines()
        registry = self.registry
        for request in self.requests:
            if request.outcome is not None:
                self.check(
                    request.waiter.removed,
                    f"ended request {request.rid} was not removed by its callback",
                )
        pending = len(self.live)
        bound = sum(1 for request in self.live.values() if request.bound)
        self.check(
            registry.pending_count() == pending,
            f"pending_count() {registry.pending_count()}, {pending} requests live",
        )
        self.check(registry.pending == pending, f"pending {registry.pending}, {pending} live")
        self.check(
            registry.bound_count() == bound,
            f"bound_count() {registry.bound_count()}, {bound} live requests bound",
        )
        queue = registry.deadline_queue_length()
        self.check(queue >= pending, f"deadline queue {queue} shorter than pending {pending}")
        timers = self.clock.pending_timers()
        self.check(
            timers == (1 if queue else 0),
            f"{timers} timers running for a deadline queue of {queue}",
        )

    # -- the client side -------------------------------------------------------------------------

    def register(self) -> None:
        client = self.rng.randrange(SESSIONS)
        session = (client, self.generation[client])
        registry = self.registry
        waiter = registry.register(session, f"ext-{len(self.requests)}")
        # As `start_sync`: however the waiter ends, it is forgotten.
        waiter.future.add_done_callback(lambda _: registry.remove(waiter))
        request = Request(len(self.requests), session, waiter, self.clock.now + TIMEOUT_S)
        self.requests.append(request)
        self.live[request.rid] = request
        self.intake.append(request)
        self.expect_ended({})

    def close_session(self) -> None:
        client = self.rng.randrange(SESSIONS)
        session = (client, self.generation[client])
        self.generation[client] += 1
        self.trace[-1] += f" {session}"
        expected = {r.rid: SESSION_GONE for r in self.live.values() if r.session == session}
        self.registry.fail_session(session)
        self.expect_ended(expected)

    def shut_down(self) -> None:
        error = ShuttingDown()
        expected = {rid: SHUT_DOWN for rid in self.live}
        self.registry.fail_all(error)
        for request in self.expect_ended(expected):
            self.check(
                request.waiter.future.exception() is error,
                f"request {request.rid} shut down with another error",
            )

    # -- the main loop ---------------------------------------------------------------------------

    def pick_order(self) -> tuple[int, int]:
        """A new order mostly; sometimes one already in use (a retry of the same operation, or
        a modify or delete of an order another request waits on)."""
        if self.bound_by_order and self.rng.random() < 0.2:
            order = self.rng.choice(list(self.bound_by_order))
            if self.rng.random() < 0.5:
                return order, self.bound_by_order[order][0].event_type or 0
            return order, self.rng.choice(EVENT_TYPES)
        self.next_order += 1
        return self.next_order, self.rng.choice(EVENT_TYPES)

    def take(self) -> Request | None:
        """The main loop takes the next operation, mostly in arrival order."""
        if not self.intake:
            return None
        index = 0 if self.rng.random() < 0.8 else self.rng.randrange(len(self.intake))
        return self.intake.pop(index)

    def bind(self) -> None:
        request = self.take()
        if request is None:
            return
        order, event_type = self.pick_order()
        request.order, request.event_type = order, event_type
        request.bound = not request.waiter.future.done()
        self.trace[-1] += f" r{request.rid}->({order},{event_type})"
        self.registry.bind(request.waiter, order, event_type)
        self.bound_by_order.setdefault(order, []).append(request)
        self.outbox.append(Event(order, event_type))
        self.expect_ended({})

    def reject(self) -> None:
        """A rejection before the order was reserved, or after binding but before applying."""
        if self.outbox and self.rng.random() < 0.5:
            event = self.outbox.pop(self.rng.randrange(len(self.outbox)))
            candidates = [
                r
                for r in self.bound_by_order.get(event.order, ())
                if r.event_type == event.event_type and r.rejection is None
            ]
            if not candidates:
                return
            request = candidates[-1]
        else:
            request = self.take()
            if request is None:
                return
        error = request.rejection = NotEnoughMoney(f"request {request.rid}")
        self.trace[-1] += f" r{request.rid}"
        expected = {request.rid: REJECTED} if request.rid in self.live else {}
        self.registry.reject(request.waiter, error)
        for ended in self.expect_ended(expected):
            self.check(
                ended.waiter.future.exception() is error,
                f"request {ended.rid} rejected with another error",
            )

    def emit(self, event: Event) -> None:
        """Emit a trade event: it answers exactly the live waiters bound to its order and type."""
        self.event_seq += 1
        data = orjson.dumps({"order": event.order, "type": event.event_type, "seq": self.event_seq})
        self.trace[-1] += f" ({event.order},{event.event_type})"
        expected = {
            r.rid: ANSWERED
            for r in self.bound_by_order.get(event.order, ())
            if r.bound and r.event_type == event.event_type and r.rid in self.live
        }
        self.registry.on_trade_event(event.event_type, event.order, data)
        for request in self.expect_ended(expected):
            answer = request.waiter.future.result()
            self.check(answer is data, f"request {request.rid} answered with other bytes")
            decoded = orjson.loads(answer)
            self.check(
                (decoded["order"], decoded["type"]) == (request.order, request.event_type),
                f"request {request.rid} answered by an event for another order or type",
            )
            self.check(
                self.clock.now < request.deadline,
                f"request {request.rid} answered after its deadline",
            )

    def emit_next(self) -> None:
        """The next event; sometimes a later one first (reordering), sometimes twice."""
        due = [event for event in self.delayed if event.due <= self.clock.now]
        if due:
            event = self.rng.choice(due)
            self.delayed.remove(event)
        elif self.outbox:
            reorder = self.rng.random() < 0.3
            event = self.outbox.pop(self.rng.randrange(len(self.outbox)) if reorder else 0)
        else:
            return
        self.emit(event)
        if self.rng.random() < 0.1:
            self.trace[-1] += " duplicated"
            self.emit(event)

    def drop(self) -> None:
        if self.outbox:
            event = self.outbox.pop(self.rng.randrange(len(self.outbox)))
            self.trace[-1] += f" ({event.order},{event.event_type})"

    def delay(self) -> None:
        """Hold an event until its waiters' deadlines have passed."""
        if self.outbox:
            event = self.outbox.pop(self.rng.randrange(len(self.outbox)))
            latest = max(r.deadline for r in self.bound_by_order[event.order])
            event.due = latest + self.rng.uniform(0, 2)
            self.delayed.append(event)

    def emit_stray(self) -> None:
        """An event for an order nobody waits on: never reserved, or whose waiters are gone."""
        if self.bound_by_order and self.rng.random() < 0.5:
            order = self.rng.choice(list(self.bound_by_order))
        else:
            order = self.rng.randrange(1, 1000)  # below every order the simulation reserves
        self.emit(Event(order, self.rng.choice(EVENT_TYPES)))

    def emit_wrong_type(self) -> None:
        candidates = [r for r in self.live.values() if r.bound]
        if candidates:
            request = self.rng.choice(candidates)
            wrong = [t for t in EVENT_TYPES if t != request.event_type]
            assert request.order is not None
            self.emit(Event(request.order, self.rng.choice(wrong)))

    def advance(self) -> None:
        if self.rng.random() < 0.93:
            seconds = self.rng.uniform(0, 0.3)
        else:
            seconds = self.rng.uniform(1, TIMEOUT_S * 1.2)
        if self.rng.random() < 0.1 and self.live:  # land exactly on someone's deadline
            seconds = max(0.0, self.rng.choice(list(self.live.values())).deadline - self.clock.now)
        self.trace[-1] += f" {seconds:.3f}s"
        self.clock.advance(seconds)
        self.expect_ended({})  # the timers settled what they had to, checked as they ran

    # -- driving ---------------------------------------------------------------------------------

    ACTIONS: tuple[tuple[str, float], ...] = (
        ("register", 20),
        ("bind", 20),
        ("emit_next", 22),
        ("drop", 3),
        ("delay", 3),
        ("emit_stray", 4),
        ("emit_wrong_type", 4),
        ("reject", 5),
        ("close_session", 2),
        ("advance", 12),
        ("shut_down", 0.3),
    )

    async def run(self, steps: int) -> None:
        names = [name for name, _ in self.ACTIONS]
        weights = [weight for _, weight in self.ACTIONS]
        for self.step in range(steps):
            self.action = self.rng.choices(names, weights)[0]
            self.trace.append(f"{self.step}:{self.action}")
            await self.do(getattr(self, self.action))
        await self.finish()

    async def do(self, action: Callable[[], None]) -> None:
        try:
            action()
        except AssertionError:
            raise
        except Exception as exc:  # e.g. InvalidStateError from a second settlement
            self.fail(f"{type(exc).__name__}: {exc}")
        # Mostly the loop runs the done-callbacks between steps; sometimes the main loop acts
        # again first, so it meets waiters that are settled but not yet removed.
        if self.action == "finish" or self.rng.random() < 0.7:
            await self.settle_callbacks()
            self.check_registry()
        else:
            self.check_deadlines()

    async def finish(self) -> None:
        """Move past every deadline and delayed event: everything must end, nothing remain."""
        self.step, self.action = self.step + 1, "finish"
        self.trace.append(f"{self.step}:finish")

        def drain() -> None:
            self.clock.advance(TIMEOUT_S + 3)
            self.expect_ended({})
            for event in self.delayed + self.outbox:
                self.emit(event)  # late events: nobody is left to answer

        await self.do(drain)
        for request in self.requests:
            self.check(request.outcome is not None, f"request {request.rid} never ended")
        self.check(self.registry.pending_count() == 0, "waiters left pending")
        self.check(self.registry.bound_count() == 0, "waiters left bound")
        self.check(self.registry.deadline_queue_length() == 0, "deadlines left queued")
        self.check(self.clock.pending_timers() == 0, "timers left running")


@pytest.mark.parametrize("seed", SEEDS)
async def test_waiter_simulation(seed: int) -> None:
    """Every request ends exactly once, as its own events, rejection, timeout, session or
    shutdown allow, and nothing is left in the registry or on the clock."""
    await Simulation(seed).run(STEPS)


async def test_simulation_reaches_every_outcome() -> None:
    """The schedule is rich enough that a few seeds end requests in each of the five ways."""
    outcomes = set()
    for seed in range(3):
        simulation = Simulation(seed)
        await simulation.run(STEPS)
        outcomes |= {request.outcome for request in simulation.requests}
    assert outcomes == {ANSWERED, REJECTED, TIMED_OUT, SESSION_GONE, SHUT_DOWN}
