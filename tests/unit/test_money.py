"""Amounts as exact decimals (docs/protocol.md section 4): parse_amount and quantize_amount."""

from __future__ import annotations

from decimal import Decimal

import pytest

from manager_gateway.protocol.errors import InvalidData
from manager_gateway.protocol.money import MAX_AMOUNT, parse_amount, quantize_amount


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(0.30000000000000004, "0.3", id="float-noise"),
        pytest.param(0.1 + 0.2, "0.3", id="0.1+0.2"),
        pytest.param(-0.30000000000000004, "-0.3", id="negative-float-noise"),
        pytest.param(300.0, "300", id="300.0"),
        pytest.param(-300.0, "-300", id="-300.0"),
        pytest.param(300, "300", id="int-300"),
        pytest.param(-300, "-300", id="int--300"),
        pytest.param(100.5, "100.5", id="100.5"),
        pytest.param(1000.0, "1000", id="1000.0"),
        pytest.param(1e9, "1000000000", id="1e9"),
        pytest.param(-1e9, "-1000000000", id="-1e9"),
        pytest.param(10**9, "1000000000", id="int-1e9"),
        pytest.param(999999999.99, "999999999.99", id="just-under-max"),
        pytest.param(300.005, "300.005", id="300.005"),
        pytest.param(123456789.12345679, "123456789.123457", id="rounded-to-15-digits"),
        pytest.param(0.01, "0.01", id="cent"),
    ],
)
def test_parse_amount_value_and_form(value: object, text: str) -> None:
    """parse_amount gives the exact decimal, in plain (not exponent) form for whole numbers."""
    amount = parse_amount(value)
    assert isinstance(amount, Decimal)
    assert str(amount) == text


def test_float_noise_reads_as_point_three() -> None:
    """0.30000000000000004 is read as Decimal('0.3'), and as 0.30 at 2 digits."""
    amount = parse_amount(0.30000000000000004)
    assert amount == Decimal("0.3")
    assert str(quantize_amount(amount, 2)) == "0.30"


def test_whole_float_has_no_exponent() -> None:
    """300.0 becomes Decimal('300') with exponent 0, never 3E+2."""
    amount = parse_amount(300.0)
    assert amount == Decimal(300)
    assert amount.as_tuple().exponent == 0
    assert "E" not in str(parse_amount(1e9))


def test_equal_numbers_parse_identically() -> None:
    """An int and the equal float give the same Decimal with the same text."""
    assert str(parse_amount(300)) == str(parse_amount(300.0)) == str(parse_amount(300.00))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1e9 + 0.01, id="1e9+0.01"),
        pytest.param(-1e9 - 0.01, id="-1e9-0.01"),
        pytest.param(10**9 + 1, id="int-1e9+1"),
        pytest.param(-(10**9) - 1, id="int--1e9-1"),
        pytest.param(1e308, id="1e308"),
        pytest.param(-1e308, id="-1e308"),
        pytest.param(10**400, id="huge-int"),
    ],
)
def test_parse_amount_refuses_over_a_billion(value: object) -> None:
    """|amount| above 1,000,000,000 is InvalidData naming the field."""
    with pytest.raises(InvalidData) as info:
        parse_amount(value)
    assert info.value.message.startswith("amount ")
    assert (info.value.status, info.value.code) == (400, "INVALID_DATA")


def test_max_amount_is_a_billion() -> None:
    """The bound is exactly 1,000,000,000."""
    assert Decimal(1_000_000_000) == MAX_AMOUNT


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param("300", id="str"),
        pytest.param("300.00", id="decimal-str"),
        pytest.param(None, id="none"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(float("-inf"), id="-inf"),
        pytest.param([300], id="list"),
        pytest.param({"amount": 300}, id="dict"),
    ],
)
def test_parse_amount_refuses_non_numbers(value: object) -> None:
    """Booleans, strings, null, NaN and infinities are InvalidData naming the field."""
    with pytest.raises(InvalidData) as info:
        parse_amount(value)
    assert info.value.message.startswith("amount ")


def test_parse_amount_names_the_given_field() -> None:
    """The error message names the field passed in."""
    with pytest.raises(InvalidData) as info:
        parse_amount("1", field="profit")
    assert info.value.message.startswith("profit ")


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        pytest.param(300.0, 2, "300.00", id="300.0@2"),
        pytest.param(300, 2, "300.00", id="int-300@2"),
        pytest.param(0.30000000000000004, 2, "0.30", id="noise@2"),
        pytest.param(100.5, 2, "100.50", id="100.5@2"),
        pytest.param(300.005, 3, "300.005", id="300.005@3"),
        pytest.param(-300.005, 3, "-300.005", id="-300.005@3"),
        pytest.param(-0.01, 2, "-0.01", id="-0.01@2"),
        pytest.param(300.0, 0, "300", id="300.0@0"),
        pytest.param(-300, 0, "-300", id="-300@0"),
        pytest.param(0.12345678, 8, "0.12345678", id="8-decimals@8"),
        pytest.param(1.5, 8, "1.50000000", id="1.5@8"),
        pytest.param(1e9, 8, "1000000000.00000000", id="max@8"),
        pytest.param(-1e9, 2, "-1000000000.00", id="-max@2"),
        pytest.param(999999999.99, 2, "999999999.99", id="just-under-max@2"),
    ],
)
def test_quantize_amount_accepts(value: object, digits: int, text: str) -> None:
    """An amount with no more decimals than the currency allows is fixed to those digits."""
    assert str(quantize_amount(parse_amount(value), digits)) == text


@pytest.mark.parametrize(
    ("value", "digits"),
    [
        pytest.param(300.005, 2, id="300.005@2"),
        pytest.param(-300.005, 2, id="-300.005@2"),
        pytest.param(1.005, 2, id="1.005@2"),
        pytest.param(0.001, 2, id="0.001@2"),
        pytest.param(300.5, 0, id="300.5@0"),
        pytest.param(-0.5, 0, id="-0.5@0"),
        pytest.param(0.123456789, 8, id="9-decimals@8"),
        pytest.param(1e-9, 8, id="1e-9@8"),
        pytest.param(123456789.12345679, 2, id="15-digits@2"),
    ],
)
def test_quantize_amount_refuses_extra_decimals(value: object, digits: int) -> None:
    """An amount with more decimals than the currency allows is refused, never rounded."""
    with pytest.raises(InvalidData) as info:
        quantize_amount(parse_amount(value), digits)
    assert info.value.message.startswith("amount ")
    assert (info.value.status, info.value.code) == (400, "INVALID_DATA")


def test_quantize_amount_names_the_given_field() -> None:
    """quantize_amount's error names the field passed in."""
    with pytest.raises(InvalidData) as info:
        quantize_amount(Decimal("1.234"), 2, field="profit")
    assert info.value.message.startswith("profit ")
