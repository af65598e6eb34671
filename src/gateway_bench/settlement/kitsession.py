"""The conformance kit's session against one funded wallet: fresh numbers, checked requests, the
ledger of everything the kit saw confirmed, and wallet checks against it.

A case is an async function of a `KitSession` that returns a one-line reason to PASS or raises
`CaseFailed` with the reason to FAIL. `begin()` marks the wallet and the ledger at a case's start;
`settle(step)` reads the wallet and fails the case unless it moved by exactly what the answers
since then imply. Requests go through `send`/`cancel`/`transfer`, which record every `0` in the
ledger *before* judging the answer, so a wrongly confirmed request still counts in the final
balance check.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from .ledger import Ledger, implied_movement
from .money import has_exact_digits, parse_amount, quantum
from .platform import (
    ABNORMAL_OVERTRADING,
    ADJUST,
    CANCEL,
    TRANSFER,
    Adjustment,
    Answer,
    Cancel,
    PlatformClient,
    Transfer,
    now_ms,
)

KIT_AMOUNT = Decimal("1.2345678")  # cut to the currency's digits: 1.23 for 2, 1 for 0


class CaseFailed(Exception):
    """A case's verdict: the one-line reason it failed."""


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[KitSession], Awaitable[str]]
    irreversible: bool = False  # moves money the kit cannot take back (listed at the end)


def registrar(
    registry: list[Case], irreversible: bool = False
) -> Callable[[Callable[[KitSession], Awaitable[str]]], Case]:
    """A decorator adding the function to `registry` as a Case named after it."""

    def register(run: Callable[[KitSession], Awaitable[str]]) -> Case:
        case = Case(run.__name__, run, irreversible)
        registry.append(case)
        return case

    return register


class KitSession:
    def __init__(
        self,
        client: PlatformClient,
        login: int,
        user_name: str,
        currency: str,
        digits: int,
        start: Decimal,
        *,
        unknown_login: int,
        stale_s: float,
    ) -> None:
        self.client = client
        self.unknown_login = unknown_login  # a login with no account behind it
        self.stale_s = stale_s  # how far off a timestamp must be to count as expired
        self.login = login
        self.user_name = user_name
        self.currency = currency
        self.digits = digits
        self.unit = quantum(digits)
        self.amount = KIT_AMOUNT.quantize(self.unit, ROUND_DOWN)
        self.start = start
        self.ledger = Ledger()
        self.case_before = start
        self._mark = Decimal(0)
        self._run = secrets.token_hex(4)  # numbers are idempotency keys: unique per run
        self._numbers = itertools.count(1)
        self._order_base = now_ms() * 1000

    # -- material ----------------------------------------------------------------------------

    def number(self) -> str:
        return f"kit{self._run}-{next(self._numbers)}"

    def adjustment(self, operation: str, size: Decimal, **changes: Any) -> Adjustment:
        """A fresh adjustment of `size` (>0); ABNORMAL_OVERTRADING gets its negative sign."""
        number = self.number()
        fields: dict[str, Any] = {
            "login": self.login,
            "user_name": self.user_name,
            "currency": self.currency,
            "operation": operation,
            "amount": -size if operation == ABNORMAL_OVERTRADING else size,
            "digits": self.digits,
            "number": number,
            "order_id": self._order_base + int(number.rpartition("-")[2]),
        }
        return Adjustment(**{**fields, **changes})

    def fmt(self, amount: Decimal) -> str:
        return f"{amount:+f}" if amount else "0"

    # -- requests ----------------------------------------------------------------------------

    async def post_adjustment(
        self,
        adjustment: Adjustment,
        body: Any = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> Answer:
        """Send without recording: for races, whose answers are recorded in logical order."""
        return await self.client.post(
            ADJUST, adjustment.body() if body is None else body, headers=headers
        )

    def record_adjustment(self, adjustment: Adjustment, answer: Answer) -> Decimal:
        """Count a `0` in the ledger; the movement it implies (zero for anything else)."""
        if not answer.ok:
            return Decimal(0)
        moved, _ = implied_movement(answer, adjustment.signed)
        self.ledger.confirm_adjustment(adjustment.login, adjustment.number, moved)
        return moved

    async def send(
        self,
        adjustment: Adjustment,
        body: Any = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> Answer:
        answer = await self.post_adjustment(adjustment, body, headers)
        self.record_adjustment(adjustment, answer)
        return checked(answer)

    def record_cancel(self, cancel: Cancel, answer: Answer) -> None:
        if answer.ok:
            self.ledger.confirm_cancel(cancel.target.number)

    async def cancel(self, cancel: Cancel, body: Any = None) -> Answer:
        answer = await self.client.post(CANCEL, cancel.body() if body is None else body)
        self.record_cancel(cancel, answer)
        return checked(answer)

    async def transfer(self, transfer: Transfer, body: Any = None) -> Answer:
        answer = await self.client.post(TRANSFER, transfer.body() if body is None else body)
        if answer.ok:
            self.ledger.confirm_transfer(transfer.login, transfer.txid, transfer.amount)
        return checked(answer)

    async def confirmed(self, operation: str, size: Decimal, what: str) -> Answer:
        """An adjustment that must be answered `0` and, for OPEN_POSITION and NORMAL_CLOSE,
        say (when it says) that it moved exactly its signed amount."""
        adjustment = self.adjustment(operation, size)
        answer = await self.send(adjustment)
        expect(answer, "0", what)
        moved = self.moved_by(answer, what)
        if moved is not None and operation != ABNORMAL_OVERTRADING and moved != adjustment.signed:
            raise CaseFailed(f"{what}: data.amount says {moved}, not {adjustment.signed}")
        return answer

    def moved_by(self, answer: Answer, what: str) -> Decimal | None:
        """`data.amount` of a success, checked for exactly `amountDigits` decimals; None when
        the answer carries none (the seed's `{}`)."""
        value = answer.data.get("amount")
        if value is None:
            return None
        digits = answer.data.get("amountDigits", self.digits)
        if not has_exact_digits(value, digits if isinstance(digits, int) else self.digits):
            raise CaseFailed(f"{what}: data.amount {value!r} is not written with {digits} decimals")
        return parse_amount(value)

    # -- the wallet --------------------------------------------------------------------------

    async def wallet(self) -> Decimal:
        answer = checked(await self.client.balance(self.login, self.user_name, self.currency))
        if not answer.ok:
            raise CaseFailed(f"cannot read the wallet: {answer.outcome} {answer.msg}")
        try:
            return parse_amount(answer.data.get("amount"))
        except ValueError as exc:
            raise CaseFailed(f"cannot read the wallet: {exc}") from exc

    def begin(self, before: Decimal) -> None:
        self.case_before = before
        self._mark = self.ledger.moved(self.login)

    @property
    def implied(self) -> Decimal:
        """What the answers since `begin()` imply the wallet moved by."""
        return self.ledger.moved(self.login) - self._mark

    async def settle(self, step: str) -> Decimal:
        """Fail unless the wallet moved since `begin()` by exactly what the answers imply."""
        actual = await self.wallet()
        if actual != self.case_before + self.implied:
            raise CaseFailed(
                f"{step}: the wallet moved {self.fmt(actual - self.case_before)}, "
                f"the answers imply {self.fmt(self.implied)}"
            )
        return actual


def checked(answer: Answer) -> Answer:
    """The answer, unless its envelope breaks the contract (trace not echoed, ...)."""
    if answer.problems:
        raise CaseFailed(f"{answer.route}: {answer.problems[0]}")
    return answer


def expect(answer: Answer, code: str, what: str) -> None:
    if answer.outcome != code:
        msg = f" ({answer.msg})" if answer.msg else ""
        raise CaseFailed(f"{what}: expected {code}, got {answer.outcome}{msg}")
