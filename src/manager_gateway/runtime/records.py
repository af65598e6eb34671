"""Accounts and finance records as the runtime holds them, and their wire shapes.

Numbers here are the ScaleTrade SDK's: `cmd` 6..9 for finance, `state` 3 closed / 6 deleted, event
record types 0..2, `reason` 7 for operations made through the API.
"""

from __future__ import annotations

from decimal import Decimal
from enum import IntEnum
from typing import Any, NamedTuple

from ..protocol.money import to_wire

REASON_API = 7
ZERO = Decimal(0)


class Cmd(IntEnum):
    BALANCE_IN = 6
    CREDIT_IN = 7
    BALANCE_OUT = 8
    CREDIT_OUT = 9


BALANCE_CMDS = frozenset({Cmd.BALANCE_IN, Cmd.BALANCE_OUT})
CREDIT_CMDS = frozenset({Cmd.CREDIT_IN, Cmd.CREDIT_OUT})


class TradeState(IntEnum):
    CLOSED_NORMAL = 3
    DELETED = 6
    FINANCE_OPEN_REQUEST = 10
    FINANCE_UPDATE_REQUEST = 11
    FINANCE_DELETE_REQUEST = 12


class RecordEvent(IntEnum):
    ADD = 0
    UPDATE = 1
    DELETE = 2


def is_credit(cmd: int) -> bool:
    return cmd in CREDIT_CMDS


# Records and accounts are NamedTuples of plain ints, str and Decimal (never IntEnum members, which
# are tracked objects): the garbage collector untracks such a tuple the first time it sees it, so
# the millions of them the runtime holds cost its collections nothing. As slotted dataclasses they
# were all tracked, and full collections over a large ledger paused the loop for over 100 ms.


class FinanceRecord(NamedTuple):
    """One version of a finance record; a change is a new version with the same `order`."""

    order: int
    version: int
    login: int
    cmd: int
    state: int
    profit: Decimal
    comment: str
    open_time: int
    close_time: int
    update_time: int

    @property
    def is_deleted(self) -> bool:
        return self.state == TradeState.DELETED

    def to_wire(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "login": self.login,
            "cmd": self.cmd,
            "state": self.state,
            "symbol": "",
            "volume": 0,
            "profit": to_wire(self.profit),
            "comment": self.comment,
            "open_time": self.open_time,
            "close_time": self.close_time,
            "update_time": self.update_time,
            "reason": REASON_API,
        }


class Account(NamedTuple):
    """An account's profile and money; replaced, never mutated, so a pending copy is cheap."""

    login: int
    group: str
    name: str
    email: str
    password_hash: str
    leverage: int
    enable: int
    currency: str
    digits: int
    balance: Decimal
    credit: Decimal
    registration_time: int
    # A shared ledger's count of this account's changes, assigned under its row lock: the order
    # every node delivers its events in. Always 0 on the embedded ledger.
    version: int = 0

    def with_money(self, balance: Decimal, credit: Decimal) -> Account:
        """This account with new money (spelled out: NamedTuple._replace costs 3x as much)."""
        return Account(
            self.login,
            self.group,
            self.name,
            self.email,
            self.password_hash,
            self.leverage,
            self.enable,
            self.currency,
            self.digits,
            balance,
            credit,
            self.registration_time,
            self.version,
        )

    def balance_wire(self) -> dict[str, Any]:
        """Money fields: with no open positions, equity is balance + credit and margin is 0."""
        equity = self.balance + self.credit
        return {
            "login": self.login,
            "balance": to_wire(self.balance),
            "credit": to_wire(self.credit),
            "equity": to_wire(equity),
            "margin": 0.0,
            "margin_free": to_wire(equity),
            "margin_level": 0.0,
        }

    def profile_wire(self) -> dict[str, Any]:
        return {
            "login": self.login,
            "group": self.group,
            "name": self.name,
            "email": self.email,
            "leverage": self.leverage,
            "enable": self.enable,
            "currency": self.currency,
            "registration_time": self.registration_time,
            **self.balance_wire(),
        }
