"""What the answers the platform received imply about each wallet.

A wallet should hold its starting amount plus the movement of every adjustment answered `0` and
not since cancelled with `0`, plus every transfer answered `0`. Each number counts once however
often it was answered (a replay moves nothing). An adjustment that timed out or failed counts for
nothing: the platform cancels it, and every final cancel answer (`0` reversed it, `US_0000001` it
was refused, `US_0000002` it never arrived and never will) leaves the wallet as if it had not
been sent.
"""

from __future__ import annotations

from decimal import Decimal

from .money import parse_amount
from .platform import Answer

ZERO = Decimal(0)


class Ledger:
    """Movements implied by confirmed answers, per wallet (login)."""

    def __init__(self) -> None:
        self._adjustments: dict[str, tuple[int, Decimal]] = {}  # number -> (login, moved)
        self._cancelled: set[str] = set()
        self._transfers: dict[str, tuple[int, Decimal]] = {}  # txid -> (login, amount)
        self._moved: dict[int, Decimal] = {}

    def confirm_adjustment(self, login: int, number: str, moved: Decimal) -> bool:
        """An adjustment answered `0`; False (and nothing counted) when already confirmed."""
        if number in self._adjustments:
            return False
        self._adjustments[number] = (login, moved)
        self._add(login, moved)
        return True

    def confirm_cancel(self, number: str) -> Decimal:
        """A cancel of adjustment `number` answered `0`: the reversal this implies (zero when
        the adjustment was never confirmed or was already cancelled)."""
        entry = self._adjustments.get(number)
        if entry is None or number in self._cancelled:
            return ZERO
        self._cancelled.add(number)
        login, moved = entry
        self._add(login, -moved)
        return -moved

    def confirm_transfer(self, login: int, txid: str, amount: Decimal) -> bool:
        """A transfer answered `0`; False when that txid was already confirmed."""
        if txid in self._transfers:
            return False
        self._transfers[txid] = (login, amount)
        self._add(login, amount)
        return True

    def is_confirmed(self, number: str) -> bool:
        return number in self._adjustments

    def moved(self, login: int) -> Decimal:
        return self._moved.get(login, ZERO)

    @property
    def total(self) -> Decimal:
        return sum(self._moved.values(), ZERO)

    def _add(self, login: int, amount: Decimal) -> None:
        self._moved[login] = self._moved.get(login, ZERO) + amount


def implied_movement(answer: Answer, requested: Decimal) -> tuple[Decimal, str | None]:
    """The signed amount a confirmed adjustment moved: `data.amount` when the answer carries it
    (ABNORMAL_OVERTRADING may move less than asked, or nothing), else `requested`. The second
    item names the problem when `data.amount` is there but unreadable (then `requested`)."""
    value = answer.data.get("amount")
    if value is None:
        return requested, None
    try:
        return parse_amount(value), None
    except ValueError as exc:
        return requested, f"data.amount unreadable: {exc}"
