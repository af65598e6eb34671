"""Exact amounts: formatting with a fixed number of decimals, parsing without floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway_bench.settlement.money import (
    format_amount,
    from_units,
    has_exact_digits,
    parse_amount,
    quantum,
    units,
)


@pytest.mark.parametrize(
    ("amount", "digits", "text"),
    [
        ("1.5", 2, "1.50"),
        ("1000", 0, "1000"),
        ("-0.00", 2, "0.00"),
        ("0.12345678", 8, "0.12345678"),
    ],
)
def test_format_writes_exactly_the_digits(amount: str, digits: int, text: str) -> None:
    """Amounts get exactly amountDigits decimals, and zero carries no sign."""
    assert format_amount(Decimal(amount), digits) == text


def test_format_refuses_to_round_money() -> None:
    """An amount with more decimals than asked for is an error, never rounded."""
    with pytest.raises(ValueError, match="more than 2 decimals"):
        format_amount(Decimal("1.005"), 2)
    with pytest.raises(ValueError, match="0 to 8"):
        quantum(9)


def test_parse_reads_strings_ints_and_decimals_exactly() -> None:
    """Strings, ints and json-parsed Decimals are read exactly; floats and bools are refused."""
    assert parse_amount("-12.30") == Decimal("-12.30")
    assert parse_amount(7) == Decimal(7)
    assert parse_amount(Decimal("0.1")) == Decimal("0.1")
    for bad in (0.1, True, "1e3", "1,5", None, " 1"):
        with pytest.raises(ValueError):
            parse_amount(bad)


def test_exact_digits_predicate() -> None:
    """Only a decimal string with exactly the digits asked for passes."""
    assert has_exact_digits("1000.00", 2) and has_exact_digits("-3", 0)
    assert not has_exact_digits("1000.0", 2)
    assert not has_exact_digits("1000.", 0)
    assert not has_exact_digits(1000, 0)


def test_units_round_trip() -> None:
    """Amounts convert to whole quanta and back without loss."""
    assert units(Decimal("12.34"), 2) == 1234
    assert from_units(1234, 2) == Decimal("12.34")
