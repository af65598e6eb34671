"""What invalid `data` is answered with, word for word (docs/protocol.md section 2: `message`
names the first bad field, `"login: Input should be a valid integer"`, `"name is required"`), and
the two amount forms a multiple of ten and a float on a rounding tie take (section 4)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manager_gateway.protocol.errors import InvalidData
from manager_gateway.protocol.models import (
    AddUserData,
    BalanceInData,
    ChannelsData,
    CommandData,
    CreditOutData,
    TradesFilterData,
    validate,
)
from manager_gateway.protocol.money import parse_amount


def message(model: type[CommandData], data: dict[str, Any]) -> str:
    with pytest.raises(InvalidData) as raised:
        validate(model, data)
    return raised.value.message


USER = {
    "group": "demo",
    "name": "Ann",
    "password": "secret123",
    "leverage": 100,
    "enable": 1,
    "email": "a@example.com",
}


@pytest.mark.parametrize(
    ("model", "data", "expected"),
    [
        (BalanceInData, {"amount": 5}, "login is required"),
        (BalanceInData, {"login": 1}, "amount is required"),
        (AddUserData, {k: v for k, v in USER.items() if k != "name"}, "name is required"),
        (ChannelsData, {}, "chanels is required"),
        (BalanceInData, {"login": "1", "amount": 5}, "login: Input should be a valid integer"),
        (TradesFilterData, {"from": -1}, "from: Input should be greater than or equal to 0"),
    ],
)
def test_the_first_bad_field_is_named(
    model: type[CommandData], data: dict[str, Any], expected: str
) -> None:
    assert message(model, data) == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("5", "amount: must be a number"),
        (True, "amount: must be a number"),
        (float("inf"), "amount: must be a finite number"),
        (1_000_000_000.5, "amount: must be at most 1000000000 in absolute value"),
    ],
)
def test_a_bad_amount_is_named_once(amount: object, expected: str) -> None:
    """The amount's own sentence after `amount: `, the field not named twice."""
    assert message(BalanceInData, {"login": 1, "amount": amount}) == expected


def test_cross_field_checks_name_their_field_themselves() -> None:
    assert message(BalanceInData, {"login": 1, "amount": -5}) == "amount must be greater than 0"
    refused = {"login": 1, "amount": -5, "comment": ""}
    assert message(CreditOutData, refused) == "comment is required"


@pytest.mark.parametrize(("value", "text"), [(30, "30"), (30.0, "30"), (-50.0, "-50"), (10, "10")])
def test_a_multiple_of_ten_keeps_a_plain_form(value: object, text: str) -> None:
    """normalize() writes 30 as 3E+1: one canonical plain form is kept, as for 300."""
    amount = parse_amount(value)
    assert (str(amount), amount.as_tuple().exponent) == (text, 0)


def test_a_float_is_rounded_from_its_shortest_form_not_its_binary_value() -> None:
    """1.000000000000005 is a tie at 15 digits: half-even gives 1 from the shortest form;
    the double's exact binary value, a hair above the tie, would round up."""
    assert repr(1.000000000000005) == "1.000000000000005"
    tie = 1.000000000000005
    assert Decimal(tie) > Decimal("1.000000000000005")  # the binary value, on purpose
    assert parse_amount(1.000000000000005) == Decimal(1)
    assert parse_amount(-1.000000000000025) == Decimal("-1.00000000000002")


FIFTEEN = Context(prec=15, rounding=ROUND_HALF_EVEN)


@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_a_float_is_its_shortest_form_at_fifteen_digits(value: float) -> None:
    amount = parse_amount(value)
    assert amount == FIFTEEN.plus(Decimal(repr(value)))
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int) and exponent <= 0
