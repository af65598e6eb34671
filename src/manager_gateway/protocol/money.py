"""Amounts as exact decimals (docs/protocol.md section 4).

A JSON number reaches us as a Python float or int. Its shortest round-trip decimal form is rounded
to 15 significant digits, which removes binary noise (`0.30000000000000004` -> `0.3`); if it still
has more decimals than the currency allows (`300.005` at 2 digits) it is refused, never rounded.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Context, Decimal

from .errors import InvalidData

#: Largest absolute amount of one operation.
MAX_AMOUNT = Decimal(1_000_000_000)
#: Significant digits kept from a binary float: a double holds 15 reliably.
SIGNIFICANT_DIGITS = 15

_CONTEXT = Context(prec=SIGNIFICANT_DIGITS, rounding=ROUND_HALF_EVEN)


def parse_amount(value: object, field: str = "amount") -> Decimal:
    """Turn a JSON number into a Decimal at 15 significant digits, within the amount bound."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidData(f"{field} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidData(f"{field} must be a finite number")
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if abs(exact) > MAX_AMOUNT:
        raise InvalidData(f"{field} must be at most {MAX_AMOUNT} in absolute value")
    amount = _CONTEXT.plus(exact).normalize(_CONTEXT)
    # normalize() writes 300 as 3E+2; keep one canonical plain form so equal amounts compare
    # and digest alike.
    exponent = amount.as_tuple().exponent
    return amount.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else amount


def quantize_amount(amount: Decimal, digits: int, field: str = "amount") -> Decimal:
    """Fix `amount` to the currency's digits; refuse it if it has more decimals than that."""
    quantum = Decimal(1).scaleb(-digits)
    fixed = amount.quantize(quantum)
    if fixed != amount:
        raise InvalidData(f"{field} has more than {digits} decimal places")
    return fixed


def to_wire(amount: Decimal) -> float:
    """A Decimal as the JSON number the official clients expect (exact for <= 15 digits)."""
    return float(amount)
