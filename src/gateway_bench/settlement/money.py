"""Exact money: amounts are `Decimal` end to end, written with a fixed number of decimals.

The platform sends amounts as decimal strings with `amountDigits`; answers may carry strings or
JSON numbers, which `platform` parses straight into `Decimal` (never through a binary float).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MAX_DIGITS = 8  # amountDigits is 0 to 8 (docs/settlement.md section 4)
MAX_AMOUNT = Decimal(1_000_000_000)  # the largest |amount| an external system must accept

_AMOUNT = re.compile(r"-?\d+(?:\.\d+)?")


def quantum(digits: int) -> Decimal:
    """The smallest amount with `digits` decimals: 1, 0.1, 0.01, ..."""
    if not 0 <= digits <= MAX_DIGITS:
        raise ValueError(f"amountDigits must be 0 to {MAX_DIGITS}, got {digits}")
    return Decimal(1).scaleb(-digits)


def format_amount(amount: Decimal, digits: int) -> str:
    """`amount` with exactly `digits` decimals; ValueError if that would round it (money is never
    rounded silently). Zero is written without a sign."""
    exact = amount.quantize(quantum(digits))
    if exact != amount:
        raise ValueError(f"{amount} has more than {digits} decimals")
    if exact == 0:
        exact = abs(exact)  # "-0.00" reads as a movement to a person
    return f"{exact:f}"


def parse_amount(value: object) -> Decimal:
    """An amount from an answer, read exactly: a decimal string, an int, or the `Decimal` a JSON
    number was parsed into. Floats and booleans are refused: they would not be exact."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"not an amount: {value!r}")
    if isinstance(value, str) and not _AMOUNT.fullmatch(value):
        raise ValueError(f"not a decimal amount: {value!r}")
    try:
        return Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {value!r}") from exc


def has_exact_digits(value: object, digits: int) -> bool:
    """Whether `value` is a decimal string with exactly `digits` decimals (none and no point for
    0): what the contract asks of every amount an answer carries."""
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        return False
    _, point, decimals = value.partition(".")
    return len(decimals) == digits if point else digits == 0


def units(amount: Decimal, digits: int) -> int:
    """`amount` as a whole number of `quantum(digits)`, for drawing random amounts."""
    return int(amount.scaleb(digits))


def from_units(count: int, digits: int) -> Decimal:
    return Decimal(count).scaleb(-digits)
