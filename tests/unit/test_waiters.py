"""The waiter registry: every way a deferred Sync answer settles, and that nothing is left over."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from manager_gateway import waiters as waiters_module
from manager_gateway.protocol.errors import ShuttingDown, SyncTimeout
from manager_gateway.waiters import SessionGone, Waiter, WaiterRegistry
from tests.fakes import FakeClock

TIMEOUT_MS = 5000
TIMEOUT_S = TIMEOUT_MS / 1000
ADD, UPDATE, DELETE = 0, 1, 2
RECORD = b'{"order":7,"login":1001}'


@pytest.fixture
def clock() -> FakeClock:
    """A manual clock: waiter timeouts fire only on `advance`."""
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> WaiterRegistry:
    """A registry with the default 5 s sync timeout on the fake clock."""
    return WaiterRegistry(clock, TIMEOUT_MS)


def assert_empty(registry: WaiterRegistry, clock: FakeClock) -> None:
    assert registry.pending_count() == 0
    assert registry.pending == 0
    assert registry.bound_count() == 0
    assert clock.pending_timers() == 0


async def test_register_starts_timer(registry: WaiterRegistry, clock: FakeClock) -> None:
    """A registered waiter is pending, not yet bound, and has one timer running."""
    waiter = registry.register("s1", "ext-1")
    assert (waiter.session, waiter.ext_id, waiter.order, waiter.event_type) == (
        "s1",
        "ext-1",
        None,
        None,
    )
    assert registry.pending_count() == 1
    assert registry.bound_count() == 0
    assert clock.pending_timers() == 1
    assert not waiter.future.done()
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_event_answers_once(registry: WaiterRegistry, clock: FakeClock) -> None:
    """The matching event resolves the future with its bytes; a second event changes nothing."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, ADD)
    assert registry.bound_count() == 1
    registry.on_trade_event(ADD, 7, RECORD)
    assert waiter.future.done()
    assert await waiter.future == RECORD
    assert registry.bound_count() == 0
    registry.on_trade_event(ADD, 7, b'{"other":1}')
    assert waiter.future.result() == RECORD
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_other_event_type_does_not_answer(registry: WaiterRegistry, clock: FakeClock) -> None:
    """An event of another type for the same order leaves the waiter bound and pending."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, DELETE)
    registry.on_trade_event(ADD, 7, RECORD)
    registry.on_trade_event(UPDATE, 7, RECORD)
    assert not waiter.future.done()
    assert registry.bound_count() == 1
    registry.on_trade_event(DELETE, 7, RECORD)
    assert waiter.future.result() == RECORD
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_other_order_does_not_answer(registry: WaiterRegistry, clock: FakeClock) -> None:
    """An event for another order leaves the waiter bound and pending."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, ADD)
    registry.on_trade_event(ADD, 8, RECORD)
    assert not waiter.future.done()
    assert registry.bound_count() == 1
    assert registry.pending_count() == 1
    registry.remove(waiter)
    assert waiter.future.cancelled()
    assert_empty(registry, clock)


async def test_unbound_waiter_is_not_answered(registry: WaiterRegistry, clock: FakeClock) -> None:
    """A waiter not yet bound to an order is answered by no event."""
    waiter = registry.register("s1", "ext-1")
    registry.on_trade_event(ADD, 7, RECORD)
    assert not waiter.future.done()
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_timeout_bound_carries_order(registry: WaiterRegistry, clock: FakeClock) -> None:
    """A bound waiter times out at exactly sync_timeout_ms with 504 and data {"order": N}."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, ADD)
    clock.advance(TIMEOUT_S - 0.001)
    assert not waiter.future.done()
    clock.advance(0.001)
    assert waiter.future.done()
    with pytest.raises(SyncTimeout) as caught:
        await waiter.future
    assert caught.value.data == {"order": 7}
    assert caught.value.to_wire("ext-1") == {
        "extID": "ext-1",
        "status": 504,
        "error": "SYNC_TIMEOUT",
        "message": "no matching trade event before timeout",
        "data": {"order": 7},
    }
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_timeout_unbound_has_no_data(registry: WaiterRegistry, clock: FakeClock) -> None:
    """A waiter that never got an order times out with data None (no `data` on the wire)."""
    waiter = registry.register("s1", "ext-1")
    clock.advance(TIMEOUT_S)
    with pytest.raises(SyncTimeout) as caught:
        await waiter.future
    assert caught.value.data is None
    assert "data" not in caught.value.to_wire("ext-1")
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_late_event_after_timeout(registry: WaiterRegistry, clock: FakeClock) -> None:
    """An event arriving after the timeout (before or after removal) changes nothing."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, ADD)
    clock.advance(TIMEOUT_S)
    registry.on_trade_event(ADD, 7, RECORD)
    assert isinstance(waiter.future.exception(), SyncTimeout)
    registry.remove(waiter)
    registry.on_trade_event(ADD, 7, RECORD)
    assert isinstance(waiter.future.exception(), SyncTimeout)
    assert_empty(registry, clock)


async def test_bind_after_timeout_is_ignored(registry: WaiterRegistry, clock: FakeClock) -> None:
    """Binding a waiter that already timed out does not put it in the order index."""
    waiter = registry.register("s1", "ext-1")
    clock.advance(TIMEOUT_S)
    registry.bind(waiter, 7, ADD)
    assert registry.bound_count() == 0
    assert isinstance(waiter.future.exception(), SyncTimeout)
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_bind_twice_keeps_first(registry: WaiterRegistry, clock: FakeClock) -> None:
    """A second bind of the same waiter is ignored: it stays on its first order and type."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, ADD)
    registry.bind(waiter, 8, DELETE)
    assert (waiter.order, waiter.event_type) == (7, ADD)
    assert registry.bound_count() == 1
    registry.on_trade_event(DELETE, 8, RECORD)
    assert not waiter.future.done()
    registry.on_trade_event(ADD, 7, RECORD)
    assert waiter.future.result() == RECORD
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_reject(registry: WaiterRegistry, clock: FakeClock) -> None:
    """A rejection settles the future with that error; later events and timeouts change nothing."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, ADD)
    error = ShuttingDown("x")
    registry.reject(waiter, error)
    registry.on_trade_event(ADD, 7, RECORD)
    clock.advance(TIMEOUT_S)
    assert waiter.future.exception() is error
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_reject_after_answer_is_ignored(registry: WaiterRegistry, clock: FakeClock) -> None:
    """Once answered, a rejection does not replace the answer."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, ADD)
    registry.on_trade_event(ADD, 7, RECORD)
    registry.reject(waiter, ShuttingDown())
    assert waiter.future.result() == RECORD
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_fail_session_drops_only_that_session(
    registry: WaiterRegistry, clock: FakeClock
) -> None:
    """fail_session rejects the session's waiters with SessionGone and leaves others untouched."""
    gone_a = registry.register("gone", "a")
    gone_b = registry.register("gone", "b")
    registry.bind(gone_a, 7, ADD)
    kept = registry.register("kept", "c")
    registry.bind(kept, 8, ADD)
    registry.fail_session("gone")
    for waiter in (gone_a, gone_b):
        assert isinstance(waiter.future.exception(), SessionGone)
    assert not kept.future.done()
    assert registry.pending_count() == 1
    assert registry.bound_count() == 1
    assert clock.pending_timers() == 1
    registry.on_trade_event(ADD, 7, RECORD)  # the dropped one's event: nothing to answer
    registry.on_trade_event(ADD, 8, RECORD)
    assert kept.future.result() == RECORD
    registry.remove(kept)
    for waiter in (gone_a, gone_b):  # the handlers' `finally` still runs: harmless
        registry.remove(waiter)
    assert_empty(registry, clock)


async def test_fail_session_unknown_is_noop(registry: WaiterRegistry, clock: FakeClock) -> None:
    """Failing a session without waiters does nothing."""
    waiter = registry.register("s1", "ext-1")
    registry.fail_session("nobody")
    assert registry.pending_count() == 1
    assert not waiter.future.done()
    registry.remove(waiter)
    assert_empty(registry, clock)


async def test_fail_all(registry: WaiterRegistry, clock: FakeClock) -> None:
    """fail_all answers every waiter of every session with the error and drops them all."""
    waiters = [registry.register(session, f"x{i}") for i, session in enumerate("aab")]
    registry.bind(waiters[0], 7, ADD)
    registry.bind(waiters[2], 9, DELETE)
    error = ShuttingDown()
    registry.fail_all(error)
    assert [w.future.exception() for w in waiters] == [error, error, error]
    assert_empty(registry, clock)
    clock.advance(TIMEOUT_S)
    assert [w.future.exception() for w in waiters] == [error, error, error]


async def test_remove_is_idempotent(registry: WaiterRegistry, clock: FakeClock) -> None:
    """remove twice is harmless, cancels the pending future and its timer."""
    waiter = registry.register("s1", "ext-1")
    registry.bind(waiter, 7, ADD)
    registry.remove(waiter)
    assert waiter.future.cancelled()
    assert waiter.removed
    assert_empty(registry, clock)
    registry.remove(waiter)
    assert_empty(registry, clock)
    clock.advance(TIMEOUT_S)
    assert waiter.future.cancelled()


async def test_remove_keeps_other_waiters(registry: WaiterRegistry, clock: FakeClock) -> None:
    """Removing one waiter of a session and order leaves the other ones registered and bound."""
    first = registry.register("s1", "a")
    second = registry.register("s1", "b")
    registry.bind(first, 7, ADD)
    registry.bind(second, 7, ADD)
    registry.remove(first)
    assert registry.pending_count() == 1
    assert registry.bound_count() == 1
    assert clock.pending_timers() == 1
    registry.on_trade_event(ADD, 7, RECORD)
    assert second.future.result() == RECORD
    registry.remove(second)
    assert_empty(registry, clock)


async def test_retry_waiters_both_answered(registry: WaiterRegistry, clock: FakeClock) -> None:
    """Two waiters on the same order (a retry, possibly on another session) both get the event."""
    first = registry.register("s1", "ext-1")
    retry = registry.register("s2", "ext-1")
    registry.bind(first, 7, ADD)
    registry.bind(retry, 7, ADD)
    assert registry.bound_count() == 2
    registry.on_trade_event(ADD, 7, RECORD)
    assert first.future.result() == RECORD
    assert retry.future.result() == RECORD
    assert registry.bound_count() == 0
    for waiter in (first, retry):
        registry.remove(waiter)
    assert_empty(registry, clock)


async def test_mixed_event_types_on_one_order(registry: WaiterRegistry, clock: FakeClock) -> None:
    """Waiters on one order for different event types are each answered by their own type only."""
    adder = registry.register("s1", "add")
    deleter = registry.register("s1", "del")
    registry.bind(adder, 7, ADD)
    registry.bind(deleter, 7, DELETE)
    registry.on_trade_event(ADD, 7, b"added")
    assert adder.future.result() == b"added"
    assert not deleter.future.done()
    assert registry.bound_count() == 1
    registry.on_trade_event(DELETE, 7, b"deleted")
    assert deleter.future.result() == b"deleted"
    for waiter in (adder, deleter):
        registry.remove(waiter)
    assert_empty(registry, clock)


async def test_handler_pattern_every_path(registry: WaiterRegistry, clock: FakeClock) -> None:
    """The handler's register / await / remove-in-finally leaves nothing after any outcome."""

    async def handler(waiter: Waiter) -> bytes:
        try:
            return await waiter.future
        finally:
            registry.remove(waiter)

    loop = asyncio.get_running_loop()

    answered = registry.register("s", "answer")
    registry.bind(answered, 1, ADD)
    task = loop.create_task(handler(answered))
    await asyncio.sleep(0)
    registry.on_trade_event(ADD, 1, RECORD)
    assert await task == RECORD
    assert_empty(registry, clock)

    timed_out = registry.register("s", "timeout")
    registry.bind(timed_out, 2, ADD)
    task = loop.create_task(handler(timed_out))
    await asyncio.sleep(0)
    clock.advance(TIMEOUT_S)
    with pytest.raises(SyncTimeout):
        await task
    assert_empty(registry, clock)

    rejected = registry.register("s", "reject")
    task = loop.create_task(handler(rejected))
    await asyncio.sleep(0)
    registry.reject(rejected, ShuttingDown())
    with pytest.raises(ShuttingDown):
        await task
    assert_empty(registry, clock)

    closed = registry.register("s", "closed")
    registry.bind(closed, 3, ADD)
    task = loop.create_task(handler(closed))
    await asyncio.sleep(0)
    registry.fail_session("s")
    with pytest.raises(SessionGone):
        await task
    assert_empty(registry, clock)

    cancelled = registry.register("s", "cancelled")
    registry.bind(cancelled, 4, ADD)
    task = loop.create_task(handler(cancelled))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_empty(registry, clock)


async def test_pending_running_count_follows_every_path(
    registry: WaiterRegistry, clock: FakeClock
) -> None:
    """`pending` (read by the metrics thread) equals pending_count() after every change."""
    a1, a2 = registry.register("a", "1"), registry.register("a", "2")
    b1, c1 = registry.register("b", "1"), registry.register("c", "1")
    assert registry.pending == registry.pending_count() == 4
    registry.remove(a1)
    registry.remove(a1)  # a second remove must not count twice
    assert registry.pending == registry.pending_count() == 3
    registry.fail_session("a")
    assert registry.pending == registry.pending_count() == 2
    clock.advance(TIMEOUT_S)  # timing out settles, the handler's remove() forgets
    assert registry.pending == registry.pending_count() == 2
    registry.remove(b1)
    assert registry.pending == registry.pending_count() == 1
    registry.fail_all(ShuttingDown())
    assert a2.future.done() and c1.future.done()
    assert_empty(registry, clock)


async def test_timeouts_counts_only_waiters_the_timer_settled(
    registry: WaiterRegistry, clock: FakeClock
) -> None:
    """`timeouts` counts a waiter its timer answered 504, not one an event or rejection beat."""
    expired = registry.register("s1", "late")
    answered = registry.register("s1", "answered")
    registry.bind(answered, 7, ADD)
    registry.on_trade_event(ADD, 7, RECORD)
    rejected = registry.register("s1", "rejected")
    registry.reject(rejected, ShuttingDown())
    clock.advance(TIMEOUT_S)  # all three timers fire: none was removed yet
    assert isinstance(expired.future.exception(), SyncTimeout)
    assert registry.timeouts == 1
    for waiter in (expired, answered, rejected):
        registry.remove(waiter)
    assert_empty(registry, clock)


async def test_each_waiter_expires_at_its_own_deadline(
    registry: WaiterRegistry, clock: FakeClock
) -> None:
    """Waiters registered at different times share one timer yet each times out at exactly
    registration + timeout, in order."""
    first = registry.register("s1", "a")
    clock.advance(1.0)
    second = registry.register("s1", "b")
    clock.advance(1.5)
    third = registry.register("s2", "c")
    assert clock.pending_timers() == 1
    clock.advance(TIMEOUT_S - 2.5 - 0.001)
    assert not first.future.done()
    clock.advance(0.001)
    assert isinstance(first.future.exception(), SyncTimeout)
    assert not second.future.done()
    clock.advance(1.0 - 0.001)
    assert not second.future.done()
    clock.advance(0.001)
    assert isinstance(second.future.exception(), SyncTimeout)
    assert not third.future.done()
    clock.advance(1.5)
    assert isinstance(third.future.exception(), SyncTimeout)
    for waiter in (first, second, third):
        registry.remove(waiter)
    assert_empty(registry, clock)


async def test_removed_oldest_does_not_delay_or_expire_others(
    registry: WaiterRegistry, clock: FakeClock
) -> None:
    """Removing the oldest and a middle waiter leaves the rest timing out on their own
    deadlines; the removed ones are never settled by the timer."""
    waiters = []
    for i in range(4):
        waiters.append(registry.register("s1", f"x{i}"))
        clock.advance(1.0)
    registry.remove(waiters[0])
    registry.remove(waiters[2])
    clock.advance(TIMEOUT_S - 4.0 + 1.0)  # waiters[1] registered at t=1: due at 1 + timeout
    assert isinstance(waiters[1].future.exception(), SyncTimeout)
    assert not waiters[3].future.done()
    clock.advance(2.0)
    assert isinstance(waiters[3].future.exception(), SyncTimeout)
    assert waiters[0].future.cancelled() and waiters[2].future.cancelled()
    for waiter in (waiters[1], waiters[3]):
        registry.remove(waiter)
    assert_empty(registry, clock)


async def test_answered_waiters_do_not_pile_up(registry: WaiterRegistry, clock: FakeClock) -> None:
    """Under steady load (answered roughly in order) the deadline queue holds about as many
    waiters as are pending, and nothing once all are answered: no memory grows with traffic."""
    window: list[Waiter] = []
    for i in range(10_000):
        waiter = registry.register("s1", f"x{i}")
        registry.bind(waiter, i + 1, ADD)
        window.append(waiter)
        if len(window) == 50:  # answer the window out of order, as concurrent commits do
            for done in reversed(window):
                registry.on_trade_event(ADD, done.order or 0, RECORD)
                registry.remove(done)
            window.clear()
            assert registry.deadline_queue_length() == 0
        assert registry.deadline_queue_length() <= 50
    assert_empty(registry, clock)


async def test_each_sweep_logs_how_many_it_timed_out(
    registry: WaiterRegistry, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `sync_timeouts` warning per timer sweep with the number of waiters it answered 504,
    none for a sweep that answered nobody, and `timeouts` counting every one of them."""
    with structlog.testing.capture_logs() as logs:
        # A fresh logger under the capture, whatever an earlier in-process CLI test configured.
        monkeypatch.setattr(waiters_module, "log", structlog.get_logger("manager_gateway.waiters"))
        first_sweep = [registry.register("s1", f"a{i}") for i in range(3)]
        clock.advance(1.0)
        second_sweep = [registry.register("s2", f"b{i}") for i in range(2)]
        clock.advance(1.0)
        answered = registry.register("s3", "answered")
        registry.bind(answered, 7, ADD)
        clock.advance(TIMEOUT_S - 2.0)  # the first three are due; the rest re-arm the timer
        assert [w.future.done() for w in first_sweep + second_sweep] == [True] * 3 + [False] * 2
        assert logs == [{"event": "sync_timeouts", "expired": 3, "log_level": "warning"}]
        clock.advance(1.0)
        assert logs[1:] == [{"event": "sync_timeouts", "expired": 2, "log_level": "warning"}]
        registry.on_trade_event(ADD, 7, RECORD)
        clock.advance(1.0)  # the last sweep finds only an answered waiter: nothing to log
        assert len(logs) == 2
    assert registry.timeouts == 5
    for waiter in [*first_sweep, *second_sweep, answered]:
        registry.remove(waiter)
    assert_empty(registry, clock)
