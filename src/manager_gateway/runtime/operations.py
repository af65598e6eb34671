"""What each state-changing operation does: checks against current state, then the new versions.

Pure functions of a `Transaction`: no I/O, no events. They raise a `GatewayError` to reject (the
transaction is untouched then) or return an `Effect` describing what to commit and announce.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..config import GroupConfig
from ..protocol.errors import (
    GroupNotFound,
    InvalidData,
    NotEnoughCredit,
    NotEnoughMoney,
    PermissionDenied,
    TradeNotFound,
    UserExists,
    UserNotFound,
)
from ..protocol.models import AddUserData, FinanceData, OrderData
from ..protocol.money import quantize_amount, to_wire
from ..session.access import Access
from ..waiters import Waiter
from .journal import JournalKey
from .records import ZERO, Account, FinanceRecord, RecordEvent, TradeState, is_credit
from .state import Transaction
from .storage import AccountEvent

# Plain ints go into records (see records.py: IntEnum members would keep them GC-tracked).
CLOSED = int(TradeState.CLOSED_NORMAL)
DELETED = int(TradeState.DELETED)


class OpKind(Enum):
    FINANCE = "finance"
    DELETE = "delete"
    ADD_USER = "add_user"
    SETTLEMENT = "settlement"  # decided by its own `decide` function, keyed by its journal


@dataclass(slots=True, eq=False)
class Operation:
    """A request for the main loop. Exactly one of `future` (async form) or `waiter` (Sync) is set;
    the main loop settles it with `outcome[answer]` or a `GatewayError`."""

    kind: OpKind
    command: str
    access: Access
    data: Any  # FinanceData | OrderData | AddUserData
    key: tuple[str, str]
    digest: str
    cmd: int = 0  # finance: the command's own cmd; delete: 1 for credit, 0 for balance
    password_hash: str = ""
    answer: str = "ack"  # the part of the outcome `future` is settled with
    future: asyncio.Future[dict[str, Any]] | None = None
    waiter: Waiter | None = None
    # Called once the operation is decided (committed, or refused), whatever its caller was
    # answered: a Sync caller may have had its 504 long before. Reads behind it wait for this.
    decided: Callable[[], None] | None = None
    # How a SETTLEMENT operation is applied (the settlement package's rules; the runtime does not
    # know them). Such operations are keyed by their journal, not by (subject, extID).
    decide: Callable[[Transaction, Operation, float], Effect] | None = None
    # The settlement journal rows `decide` reads, fetched from the ledger first if need be.
    journal_keys: tuple[JournalKey, ...] = ()


@dataclass(slots=True)
class Effect:
    """An applied operation: what the client is answered and which events follow the commit."""

    outcome: dict[str, Any]
    record: FinanceRecord | None
    event_type: int | None
    account: Account | None  # set when `record` is
    # The outcome was committed by an earlier batch (a settlement replay): answer it at once,
    # with nothing to write.
    durable: bool = False
    # A shared ledger's record of the change, for every node's sessions (set by the main loop).
    event: AccountEvent | None = None


def _visible_account(tx: Transaction, access: Access, login: int) -> Account:
    account = tx.account(login)
    if account is None:
        raise UserNotFound(f"account {login} not found")
    if not access.sees_account(login, account.group):
        raise PermissionDenied(f"account {login} is outside this session's groups")
    return account


def _with_money(account: Account, credit: bool, delta: Any) -> Account:
    """The account after `delta`; refused if balance or credit would go below zero."""
    if credit:
        value = account.credit + delta
        if value < ZERO:
            raise NotEnoughCredit(f"credit of {account.login} would become {value}")
        return account.with_money(account.balance, value)
    value = account.balance + delta
    if value < ZERO:
        raise NotEnoughMoney(f"balance of {account.login} would become {value}")
    return account.with_money(value, account.credit)


def _finance_outcome(record: FinanceRecord, ack_state: int) -> dict[str, Any]:
    ack = {
        "accepted": True,
        "order": record.order,
        "state": ack_state,
        "login": record.login,
        "cmd": record.cmd,
        "amount": to_wire(record.profit),
    }
    return {"order": record.order, "ack": ack, "record": record.to_wire()}


def apply_finance(tx: Transaction, op: Operation, now: int) -> Effect:
    data: FinanceData = op.data
    account = _visible_account(tx, op.access, data.login)
    amount = quantize_amount(data.amount, account.digits)
    credit = is_credit(op.cmd)
    existing = tx.record(data.order) if data.order is not None else None
    if existing is not None:
        if existing.login != data.login:
            raise InvalidData(f"order {existing.order} belongs to another login")
        if is_credit(existing.cmd) != credit:
            kind = "credit" if is_credit(existing.cmd) else "balance"
            raise InvalidData(f"order {existing.order} is a {kind} record")
        if existing.is_deleted:
            raise InvalidData(f"order {existing.order} is deleted")
        updated = _with_money(account, credit, amount - existing.profit)
        record = FinanceRecord(
            existing.order,
            existing.version + 1,
            data.login,
            op.cmd,
            CLOSED,
            amount,
            data.comment or existing.comment,
            existing.open_time if data.open_time is None else data.open_time,
            existing.close_time if data.close_time is None else data.close_time,
            now,
        )
        event, ack_state = RecordEvent.UPDATE, TradeState.FINANCE_UPDATE_REQUEST
    else:
        updated = _with_money(account, credit, amount)
        record = FinanceRecord(
            tx.reserve_order(),
            1,
            data.login,
            op.cmd,
            CLOSED,
            amount,
            data.comment or "Finance",
            now if data.open_time is None else data.open_time,
            now if data.close_time is None else data.close_time,
            now,
        )
        event, ack_state = RecordEvent.ADD, TradeState.FINANCE_OPEN_REQUEST
    tx.put_account(updated)
    tx.put_record(record)
    return Effect(_finance_outcome(record, ack_state), record, event, updated)


def apply_delete(tx: Transaction, op: Operation, now: int) -> Effect:
    data: OrderData = op.data
    existing = tx.record(data.order)
    if existing is None:
        raise TradeNotFound(f"order {data.order} not found")
    account = _visible_account(tx, op.access, existing.login)
    credit = bool(op.cmd)
    if is_credit(existing.cmd) != credit:
        kind = "credit" if is_credit(existing.cmd) else "balance"
        raise InvalidData(f"order {existing.order} is a {kind} record")
    if existing.is_deleted:
        raise InvalidData(f"order {existing.order} is already deleted")
    updated = _with_money(account, credit, -existing.profit)
    record = existing._replace(version=existing.version + 1, state=DELETED, update_time=now)
    tx.put_account(updated)
    tx.put_record(record)
    outcome = _finance_outcome(record, TradeState.FINANCE_DELETE_REQUEST)
    return Effect(outcome, record, RecordEvent.DELETE, updated)


def apply_add_user(
    tx: Transaction, op: Operation, now: int, groups: dict[str, GroupConfig]
) -> Effect:
    data: AddUserData = op.data
    group = groups.get(data.group)
    if group is None:
        raise GroupNotFound(f"group {data.group!r} not found")
    if not op.access.sees_group(data.group):
        raise PermissionDenied(f"group {data.group!r} is outside this session's groups")
    if data.login is not None and tx.account(data.login) is not None:
        raise UserExists(f"account {data.login} exists")
    login = data.login if data.login is not None else tx.allocate_login()
    account = Account(
        login,
        group.name,
        data.name,
        data.email,
        op.password_hash,
        data.leverage,
        data.enable,
        group.currency,
        group.digits,
        ZERO.quantize(group.quantum),
        ZERO.quantize(group.quantum),
        now,
    )
    tx.put_account(account)
    user = {"login": login, "leverage": data.leverage, "currency": group.currency}
    return Effect({"login": login, "user": user}, None, None, account)
