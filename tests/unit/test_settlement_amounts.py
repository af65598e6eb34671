"""Settlement amounts (docs/settlement.md section 6): the sentence each refused amount is answered
with, the 15-digit bound on JSON numbers, and the decimals an amount needs, as properties."""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from manager_gateway.settlement.models import AdjustmentBody, decimal_places
from tests.unit.test_settlement_models import ADJUSTMENT


def problem(amount: object, digits: int = 2) -> str:
    """The sentence the amount is refused with (the platform reads it after `amount: `)."""
    body = {**ADJUSTMENT, "amount": amount, "amountDigits": digits}
    with pytest.raises(ValidationError) as raised:
        AdjustmentBody.model_validate_json(orjson.dumps(body))
    error = raised.value.errors()[0]
    assert error["loc"] == ("amount",)
    return str(error["msg"]).removeprefix("Value error, ")


def accepted(amount: object, digits: int) -> Decimal:
    negative = str(amount).startswith("-")  # a loss beyond the margin is the negative one
    operation = "ABNORMAL_OVERTRADING" if negative else "OPEN_POSITION"
    body = {**ADJUSTMENT, "amount": amount, "amountDigits": digits, "operationType": operation}
    parsed: Decimal = AdjustmentBody.model_validate_json(orjson.dumps(body)).amount
    return parsed


@pytest.mark.parametrize(
    ("amount", "sentence"),
    [
        ("abc", 'must be a decimal string such as "12.50"'),
        ("", 'must be a decimal string such as "12.50"'),
        (None, 'must be a decimal string such as "12.50"'),
        (True, 'must be a decimal string such as "12.50"'),
        ([1], 'must be a decimal string such as "12.50"'),
        ({"v": 1}, 'must be a decimal string such as "12.50"'),
        ("NaN", "must be a finite number"),
        ("-Infinity", "must be a finite number"),
        ("1000000000.01", "must be at most 1000000000 in absolute value"),
        ("-1e999999", "must be at most 1000000000 in absolute value"),
        ("0", "must not be zero"),
        ("-0.000", "must not be zero"),
        (
            0.30000000000000004,
            "has more than 15 significant digits as a JSON number; send a string",
        ),
    ],
)
def test_each_refused_amount_has_its_sentence(amount: object, sentence: str) -> None:
    assert problem(amount) == sentence


@pytest.mark.parametrize(
    ("amount", "digits", "expected"),
    [
        (999999999.123456, 6, "999999999.123456"),  # 15 significant digits: exact
        (-12345678.9012345, 7, "-12345678.9012345"),
        (1e-07, 8, "1E-7"),
    ],
)
def test_json_numbers_of_fifteen_digits_are_read_exactly(
    amount: float, digits: int, expected: str
) -> None:
    assert accepted(amount, digits) == Decimal(expected)


@pytest.mark.parametrize(
    ("amount", "digits"),
    [("12.0", 0), ("12.000", 0), ("0.10", 1), ("1E+3", 0), ("5", 0), ("-7.50", 1)],
)
def test_trailing_zeros_need_no_decimals(amount: str, digits: int) -> None:
    """amountDigits bounds the decimals an amount needs, trailing zeros aside."""
    assert accepted(amount, digits) == Decimal(amount)


def test_one_decimal_too_many_is_named() -> None:
    body: dict[str, Any] = {**ADJUSTMENT, "amount": "12.05", "amountDigits": 1}
    with pytest.raises(ValidationError) as raised:
        AdjustmentBody.model_validate_json(orjson.dumps(body))
    msg = str(raised.value.errors()[0]["msg"]).removeprefix("Value error, ")
    assert msg == "amount has more decimals than amountDigits (1)"


nonzero_decimals = st.builds(
    lambda sign, digits, exponent: Decimal((sign, digits, exponent)),
    st.integers(0, 1),
    st.lists(st.integers(0, 9), min_size=1, max_size=30).filter(any).map(tuple),
    st.integers(-40, 40),
)


@given(nonzero_decimals)
def test_decimal_places_is_the_exponent_of_the_normal_form(amount: Decimal) -> None:
    """For any non-zero amount: the decimals of its shortest form (0 for a whole number)."""
    exact = Context(prec=100)
    normal = amount.normalize(exact).as_tuple().exponent
    assert isinstance(normal, int)
    assert decimal_places(amount) == max(0, -normal)


def test_decimal_places_of_huge_exponents_stay_exact() -> None:
    """normalize() under the default context would round these to zero; counting does not."""
    assert decimal_places(Decimal("1e-999999999999")) == 999999999999
    assert decimal_places(Decimal("1.50e-999999999999")) == 1000000000000
    assert decimal_places(Decimal("3e+999999999999")) == 0
