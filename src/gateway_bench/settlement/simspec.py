"""What a simulation does (`SimulationSpec`) and the adjustments it sends (`AdjustmentSource`)."""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import Any

from ..spec import check_pacing, check_weight
from .money import MAX_AMOUNT, from_units, quantum, units
from .platform import (
    ABNORMAL_OVERTRADING,
    NORMAL_CLOSE,
    OPEN_POSITION,
    OPERATIONS,
    PLATFORM_TIMEOUT_S,
    Adjustment,
)

DEFAULT_MIX = {OPEN_POSITION: 70.0, NORMAL_CLOSE: 25.0, ABNORMAL_OVERTRADING: 5.0}


@dataclass
class SimulationSpec:
    """One simulation. Closed loop with `concurrency` adjustments in flight unless `rate` is set
    (open loop, adjustments/s); stops after `duration_s` or `requests` measured adjustments,
    whichever comes first (at least one must be set), after `warmup_s` of unmeasured traffic."""

    url: str = "http://127.0.0.1:8081/api"
    currency: str = "USD"
    logins: range = range(100_000, 100_010)
    company_id: int = 1
    token: str | None = None
    concurrency: int = 10  # closed loop: adjustments in flight; also the connection pool size
    rate: float | None = None
    duration_s: float | None = 10.0
    requests: int | None = None
    warmup_s: float = 0.0
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    amount_min: Decimal = Decimal(1)
    amount_max: Decimal = Decimal(100)
    timeout_s: float = PLATFORM_TIMEOUT_S
    cancel_attempts: int = 5  # tries per cancel before the platform gives up on it
    cancel_backoff_s: float = 0.1  # before the 2nd try; doubles each time, at most 2 s
    seed: int = 1
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if not self.logins:
            raise ValueError("the login range is empty")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        check_pacing(
            self.rate,
            "adjustments/s",
            self.duration_s,
            self.requests,
            self.warmup_s,
            self.timeout_s,
        )
        if self.cancel_attempts < 1:
            raise ValueError(f"cancel attempts must be at least 1, got {self.cancel_attempts}")
        if not self.cancel_backoff_s >= 0:
            raise ValueError(
                f"cancel backoff must be zero or positive, got {self.cancel_backoff_s}"
            )
        if not 0 < self.amount_min <= self.amount_max:
            raise ValueError(
                f"need 0 < amount min <= amount max, got {self.amount_min}, {self.amount_max}"
            )
        if self.amount_max * close_factor(self.mix) > MAX_AMOUNT:
            raise ValueError(f"amounts (closes scaled) would exceed {MAX_AMOUNT}")
        check_mix(self.mix)

    @property
    def closed_loop(self) -> bool:
        return self.rate is None

    def public(self) -> dict[str, Any]:
        """The settings for a report: everything but the token's value, JSON-friendly."""
        settings = {name: getattr(self, name) for name in self.__dataclass_fields__}
        settings["token"] = "<set>" if self.token else None
        settings["logins"] = f"{self.logins.start}-{self.logins.stop - 1}"
        settings["mix"] = dict(self.mix)
        settings["amount_min"] = str(self.amount_min)
        settings["amount_max"] = str(self.amount_max)
        return settings


def check_mix(mix: dict[str, float]) -> None:
    if not mix:
        raise ValueError("the mix needs at least one operation type")
    for operation, weight in mix.items():
        if operation not in OPERATIONS:
            raise ValueError(
                f"unknown operation type {operation!r}; known: {', '.join(OPERATIONS)}"
            )
        check_weight(operation, weight)


def parse_mix(text: str) -> dict[str, float]:
    """`"OPEN_POSITION=70,NORMAL_CLOSE=30"` -> weights; a bare name weighs 1."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight_text = part.strip().partition("=")
        name = name.strip().upper()
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ValueError(f"weight of {name} is not a number: {weight_text!r}") from None
        mix[name] = mix.get(name, 0.0) + weight
    check_mix(mix)
    return mix


def parse_logins(text: str) -> range:
    """`"100000-100099"` (inclusive) or a single `"100000"` -> a range of logins."""
    first_text, sep, last_text = text.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if sep else first
    except ValueError:
        raise ValueError(f"logins must be FIRST-LAST or one login, got {text!r}") from None
    if first < 0 or last < first:
        raise ValueError(f"logins must be FIRST-LAST with 0 <= FIRST <= LAST, got {text!r}")
    return range(first, last + 1)


def close_factor(mix: dict[str, float]) -> Decimal:
    """How much larger NORMAL_CLOSE amounts are than the others, so that on average closes give
    back what opens and overtradings take: without it a 70/25/5 mix drains every wallet and the
    run measures refusals instead of settlements."""
    closes = mix.get(NORMAL_CLOSE, 0.0)
    takes = mix.get(OPEN_POSITION, 0.0) + mix.get(ABNORMAL_OVERTRADING, 0.0)
    if not closes or not takes:
        return Decimal(1)
    return (Decimal(repr(takes)) / Decimal(repr(closes))).quantize(Decimal("0.0001"))


class AdjustmentSource:
    """The adjustments a run sends: logins in turn, the operation type drawn from the mix and the
    amount drawn uniformly at the wallet currency's precision, both by a generator seeded from
    the spec, so a run's sequence of requests is reproducible."""

    def __init__(self, spec: SimulationSpec, digits: dict[int, int]) -> None:
        self._random = random.Random(spec.seed)
        self._operations = list(spec.mix)
        self._weights = [spec.mix[op] for op in self._operations]
        self._logins = list(spec.logins)
        self._digits = digits
        self._spec = spec
        self._factor = close_factor(spec.mix)
        self._run = secrets.token_hex(4)  # numbers are idempotency keys: unique per run
        self._order_base = time.time_ns() // 1_000_000 * 1000
        self._seq = 0

    def next(self) -> Adjustment:
        seq = self._seq = self._seq + 1
        login = self._logins[seq % len(self._logins)]
        operation = self._random.choices(self._operations, self._weights)[0]
        digits = self._digits[login]
        low = units(self._spec.amount_min.quantize(quantum(digits), ROUND_CEILING), digits)
        high = units(self._spec.amount_max.quantize(quantum(digits), ROUND_DOWN), digits)
        amount = from_units(self._random.randint(low, max(low, high)), digits)
        if operation == NORMAL_CLOSE:
            scaled = (amount * self._factor).quantize(quantum(digits), ROUND_DOWN)
            amount = max(scaled, quantum(digits))  # a factor below 1 must not make it zero
        elif operation == ABNORMAL_OVERTRADING:
            amount = -amount
        return Adjustment(
            login=login,
            user_name=f"sim-{login}",
            currency=self._spec.currency,
            operation=operation,
            amount=amount,
            digits=digits,
            number=f"s{self._run}-{seq}",
            order_id=self._order_base + seq,
        )
