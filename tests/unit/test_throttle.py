"""The address penalty after repeated invalid tokens, on a fake clock."""

from __future__ import annotations

from manager_gateway.server.throttle import AuthThrottle
from tests.fakes import FakeClock


def test_penalty_doubles_up_to_the_maximum() -> None:
    """Each closure from one address doubles its penalty, capped at the maximum."""
    clock = FakeClock()
    throttle = AuthThrottle(clock, base_s=1.0, max_s=5.0)
    assert [throttle.penalize("10.0.0.1") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_relentless_address_stays_at_the_maximum() -> None:
    """Thousands of closures from one address keep the penalty at its maximum (the count of
    offences is capped, so the doubling never overflows)."""
    clock = FakeClock()
    throttle = AuthThrottle(clock, base_s=1.0, max_s=60.0)
    for _ in range(5000):
        assert throttle.penalize("10.0.0.1") <= 60.0
    assert throttle.penalize("10.0.0.1") == 60.0


def test_refused_only_during_the_penalty_and_only_that_address() -> None:
    """A penalised address is refused until its penalty ends; other addresses never are."""
    clock = FakeClock()
    throttle = AuthThrottle(clock, base_s=1.0, max_s=60.0)
    throttle.penalize("10.0.0.1")
    assert throttle.refuses("10.0.0.1")
    assert not throttle.refuses("10.0.0.2")
    clock.advance(0.999)
    assert throttle.refuses("10.0.0.1")
    clock.advance(0.001)
    assert not throttle.refuses("10.0.0.1")


def test_a_quiet_address_starts_again_from_the_base() -> None:
    """After a whole maximum penalty without offences, the next penalty is the base again."""
    clock = FakeClock()
    throttle = AuthThrottle(clock, base_s=1.0, max_s=8.0)
    throttle.penalize("10.0.0.1")
    throttle.penalize("10.0.0.1")  # 2 s, until t=2
    clock.advance(2.0 + 8.0 + 0.001)
    assert throttle.penalize("10.0.0.1") == 1.0


def test_table_is_bounded() -> None:
    """Only the most recently penalised addresses are remembered."""
    clock = FakeClock()
    throttle = AuthThrottle(clock, base_s=1.0, max_s=60.0, capacity=3)
    for n in range(10):
        throttle.penalize(f"10.0.0.{n}")
    assert len(throttle) == 3
    assert not throttle.refuses("10.0.0.0")
    assert throttle.refuses("10.0.0.9")


def test_zero_base_turns_it_off() -> None:
    """auth_penalty_s = 0: nothing is ever refused."""
    throttle = AuthThrottle(FakeClock(), base_s=0.0, max_s=60.0)
    throttle.penalize("10.0.0.1")
    assert not throttle.refuses("10.0.0.1")
