"""The ledger: what confirmed answers imply, each number counted once."""

from __future__ import annotations

from decimal import Decimal

from gateway_bench.settlement.ledger import Ledger, implied_movement
from gateway_bench.settlement.platform import ADJUST, Answer


def answer(data: dict[str, object]) -> Answer:
    return Answer(ADJUST, 200, "0", "success", dict(data), 0.001)


def test_a_number_counts_once_and_a_cancel_reverses_it_once() -> None:
    """Replays add nothing, and only the first cancel of a confirmed adjustment reverses it."""
    ledger = Ledger()
    assert ledger.confirm_adjustment(1, "a", Decimal("-5.00"))
    assert not ledger.confirm_adjustment(1, "a", Decimal("-5.00"))
    ledger.confirm_adjustment(2, "b", Decimal("3.00"))
    assert ledger.confirm_cancel("a") == Decimal("5.00")
    assert ledger.confirm_cancel("a") == 0
    assert ledger.confirm_cancel("never-confirmed") == 0
    assert ledger.confirm_transfer(1, "t", Decimal("2.00"))
    assert not ledger.confirm_transfer(1, "t", Decimal("2.00"))
    assert (ledger.moved(1), ledger.moved(2), ledger.total) == (2, 3, 5)


def test_implied_movement_prefers_the_answers_data_amount() -> None:
    """data.amount (what was moved) beats the request; absent or unreadable, the request."""
    asked = Decimal("-10.00")
    assert implied_movement(answer({"amount": "-4.00"}), asked) == (Decimal("-4.00"), None)
    assert implied_movement(answer({"amount": Decimal("-4.5")}), asked) == (Decimal("-4.5"), None)
    assert implied_movement(answer({}), asked) == (asked, None)
    moved, problem = implied_movement(answer({"amount": 4.0}), asked)
    assert moved == asked and problem is not None and "unreadable" in problem
