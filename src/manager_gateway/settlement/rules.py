"""What each settlement request does to the wallets: the decision table, run by the main loop.

`Rules.decide` is a SETTLEMENT operation's `decide` function: the single writer calls it in
arrival order with every other operation, against the batch's `Transaction`, so an adjustment and
its cancel are decided one after the other whatever order they raced in. It writes the request's
journal row (and the finance record it causes) into the same transaction, so a crash leaves both
or neither. Nothing here does I/O or awaits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson
import structlog

from ..runtime.journal import REQUESTS, TRANSFERS, JournalKey, JournalRow
from ..runtime.operations import Effect, Operation
from ..runtime.records import (
    ZERO,
    Account,
    Cmd,
    FinanceRecord,
    RecordEvent,
    TradeState,
    is_credit,
)
from ..runtime.state import Transaction
from ..session.access import Access
from .codes import Code, Refusal

log = structlog.get_logger("manager_gateway.settlement")

Kind = Literal["adjustment", "cancel", "transfer"]
Overtrading = Literal["deduct_available", "deduct", "ignore"]
WalletField = Literal["credit", "balance"]

OPEN_POSITION = "OPEN_POSITION"
NORMAL_CLOSE = "NORMAL_CLOSE"
ABNORMAL_OVERTRADING = "ABNORMAL_OVERTRADING"
OPERATION_TYPES = (OPEN_POSITION, NORMAL_CLOSE, ABNORMAL_OVERTRADING)

CLOSED = int(TradeState.CLOSED_NORMAL)
DELETED = int(TradeState.DELETED)
#: Longest login a `thirdServerCode` may name (SQLite's INTEGER is 64-bit).
MAX_LOGIN_DIGITS = 18


@dataclass(frozen=True, slots=True)
class SettlementRequest:
    """A validated platform request, as the main loop needs it."""

    kind: Kind
    company: int
    number: str  # requestUniqueNo, or txid for a transfer
    fingerprint: str  # keyed digest of its content: a replay has the same, a reuse does not
    account_code: str  # thirdServerCode (or a transfer's username): the login, in decimal
    user_name: str
    currency: str
    amount: Decimal  # signed as the platform sent it
    operation: str | None = None  # adjustments: OPEN_POSITION, NORMAL_CLOSE, ...
    order_id: int | None = None  # the platform's order
    reverses: str | None = None  # cancels: the adjustment's number

    @property
    def key(self) -> JournalKey:
        return (self.company, TRANSFERS if self.kind == "transfer" else REQUESTS, self.number)

    @property
    def login(self) -> int | None:
        """The login `account_code` names, if it can be one: a shared ledger locks its account
        for the batch (the main loop reads `login` from any operation's data)."""
        code = self.account_code
        if code.isascii() and code.isdigit() and len(code) <= MAX_LOGIN_DIGITS:
            return int(code)
        return None

    @property
    def journal_keys(self) -> tuple[JournalKey, ...]:
        """The journal rows deciding this request reads: its own, and a cancel's target."""
        if self.reverses is None:
            return (self.key,)
        return (self.key, (self.company, REQUESTS, self.reverses))


@dataclass(slots=True)
class Counters:
    """What the rules decided, for the metrics (plain ints: a scrape thread reads them)."""

    tombstones: int = 0
    late_after_tombstone: int = 0
    reversals_refused: int = 0


def answer(code: Code, msg: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": str(code), "msg": msg, "data": data if data is not None else {}}


def wallet_text(amount: Decimal, digits: int) -> str:
    """An amount as the platform reads it: exactly `digits` decimals."""
    return str(amount.quantize(Decimal(1).scaleb(-digits)))


class Rules:
    """The decision table of docs/settlement.md, for one configuration."""

    def __init__(self, field: WalletField, overtrading: Overtrading, groups: Access) -> None:
        self.credit = field == "credit"
        self.overtrading = overtrading
        self.groups = groups  # an access object whose masks are settlement_groups
        self.counters = Counters()

    # -- the main loop's entry point -----------------------------------------------------------

    def decide(self, tx: Transaction, op: Operation, now: float) -> Effect:
        request: SettlementRequest = op.data
        seen = tx.journal_row(request.key)
        if seen is not None:
            return self._seen_before(tx, request, seen)
        if request.kind == "cancel":
            return self._cancel(tx, request, now)
        return self._move(tx, request, now)

    # -- reads (committed state) ---------------------------------------------------------------

    def wallet(self, account: Account) -> Decimal:
        return account.credit if self.credit else account.balance

    def account(self, lookup: Callable[[int], Account | None], code: str) -> Account:
        """The account a `thirdServerCode` names, if it is open to settlement."""
        login = int(code) if code.isascii() and code.isdigit() else None
        found = lookup(login) if login is not None and len(code) <= MAX_LOGIN_DIGITS else None
        if found is None or not self.groups.sees_account(found.login, found.group):
            raise Refusal(Code.ACCOUNT_NOT_FOUND, f"no account with thirdServerCode {code!r}")
        return found

    def checked_account(
        self, lookup: Callable[[int], Account | None], code: str, currency: str
    ) -> Account:
        """The account, if open to settlement and of that currency."""
        account = self.account(lookup, code)
        if currency != account.currency:
            raise Refusal(
                Code.CURRENCY_MISMATCH,
                f"currency {currency!r} is not the account's currency {account.currency!r}",
            )
        return account

    # -- decisions -----------------------------------------------------------------------------

    def _seen_before(self, tx: Transaction, request: SettlementRequest, seen: JournalRow) -> Effect:
        """A number already in the journal: a replay, a late adjustment, or a reuse."""
        durable = seen.key not in tx.journal  # committed by an earlier batch: answer at once
        if seen.kind == "tombstone" and request.kind == "adjustment":
            self.counters.late_after_tombstone += 1
            log.warning("settlement_late_adjustment", company=request.company, number=seen.number)
            refusal = answer(
                Code.REQUEST_CANCELLED,
                f"requestUniqueNo {seen.number!r} was cancelled before it arrived; not applied",
            )
            return Effect({"answer": refusal}, None, None, None, durable)
        if seen.kind != request.kind or seen.fingerprint != request.fingerprint:
            mismatch = answer(
                Code.DUPLICATE_REQUEST_MISMATCH,
                f"number {seen.number!r} was already used for a different {seen.kind}",
            )
            return Effect({"answer": mismatch}, None, None, None, durable)
        return Effect({"answer": replayed(seen)}, None, None, None, durable)

    def _move(self, tx: Transaction, request: SettlementRequest, now: float) -> Effect:
        """An adjustment or a transfer: move money, or journal the refusal."""
        account = None
        try:
            account = self.checked_account(tx.account, request.account_code, request.currency)
            amount = _at_digits(request.amount, account.digits)
            delta = self._delta(request, amount, self.wallet(account))
        except Refusal as refusal:
            login = account.login if account is not None else None
            self._journal(tx, request, now, refusal.code, refusal.msg, {}, login, ZERO)
            return Effect({"answer": answer(refusal.code, refusal.msg)}, None, None, None)
        delta = delta if delta else ZERO  # never "-0.00"
        wallet = self.wallet(account) + delta
        data = {
            "order": None,
            "amount": wallet_text(delta, account.digits),
            "amountDigits": account.digits,
            "walletAmount": wallet_text(wallet, account.digits),
        }
        if delta == ZERO:  # ignored, or nothing left to deduct: journaled, nothing moved
            msg = "success (nothing to move)"
            self._journal(tx, request, now, Code.OK, msg, data, account.login, ZERO)
            return Effect({"answer": answer(Code.OK, msg, data)}, None, None, None)
        seconds = int(now)
        record = FinanceRecord(
            tx.reserve_order(), 1, account.login, self._cmd(delta), CLOSED, delta,
            _comment(request), seconds, seconds, seconds,
        )  # fmt: skip
        updated = self._with_wallet(account, wallet)
        tx.put_account(updated)
        tx.put_record(record)
        data["order"] = record.order
        self._journal(tx, request, now, Code.OK, "success", data, account.login, delta, record)
        outcome = {"answer": answer(Code.OK, "success", data), "record": record.to_wire()}
        return Effect(outcome, record, RecordEvent.ADD, updated)

    def _delta(self, request: SettlementRequest, amount: Decimal, wallet: Decimal) -> Decimal:
        """The signed change to the wallet, or a refusal."""
        if request.kind == "transfer" or request.operation == NORMAL_CLOSE:
            return amount
        if request.operation == ABNORMAL_OVERTRADING:
            loss = -amount
            if self.overtrading == "ignore":
                return ZERO
            if self.overtrading == "deduct_available":
                return -min(loss, max(wallet, ZERO))
            return self._deduct(loss, wallet)
        return self._deduct(amount, wallet)  # OPEN_POSITION

    @staticmethod
    def _deduct(amount: Decimal, wallet: Decimal) -> Decimal:
        if wallet < amount:
            raise Refusal(Code.INSUFFICIENT_FUNDS, f"the wallet holds {wallet}, less than {amount}")
        return -amount

    def _cancel(self, tx: Transaction, request: SettlementRequest, now: float) -> Effect:
        """Section "Cancel": the outcome follows the state of the number it reverses."""
        assert request.reverses is not None  # the model requires it for a cancel
        target_key = (request.company, REQUESTS, request.reverses)
        target = tx.journal_row(target_key)
        if target is None:
            tombstone = JournalRow(
                request.company, REQUESTS, request.reverses, "tombstone", "",
                str(Code.NEVER_RECEIVED), None, request.user_name, None, "0", None,
                request.number, b"{}", now,
            )  # fmt: skip
            tx.put_journal(tombstone)
            self.counters.tombstones += 1
            return self._cancel_answer(
                tx, request, now, Code.NEVER_RECEIVED,
                f"no adjustment {request.reverses!r} was received; it will not be applied",
            )  # fmt: skip
        if target.kind == "tombstone":
            return self._cancel_answer(
                tx, request, now, Code.NEVER_RECEIVED,
                f"no adjustment {request.reverses!r} was received; it will not be applied",
            )  # fmt: skip
        if target.kind != "adjustment":
            msg = f"reverseRequestUniqueNo {request.reverses!r} names a {target.kind}"
            return Effect({"answer": answer(Code.INVALID_PARAMETER, msg)}, None, None, None)
        if target.code != Code.OK:
            return self._cancel_answer(
                tx, request, now, Code.RECEIVED_NOT_PROCESSED,
                f"adjustment {request.reverses!r} was received but not processed ({target.code})",
            )  # fmt: skip
        if target.cancelled_by is not None or target.finance_order is None:
            why = "already cancelled" if target.cancelled_by else "moved nothing"
            return self._cancel_answer(tx, request, now, Code.OK, f"success ({why})")
        return self._reverse(tx, request, target, now)

    def _reverse(
        self, tx: Transaction, request: SettlementRequest, target: JournalRow, now: float
    ) -> Effect:
        """Delete the finance record an applied adjustment made, and mark it cancelled."""
        assert target.finance_order is not None
        record = tx.record(target.finance_order)
        account = tx.account(record.login) if record is not None else None
        if abs(Decimal(target.amount)) != abs(request.amount):
            log.warning(
                "settlement_cancel_amount_differs", company=request.company,
                number=request.reverses, original=target.amount, cancel=str(request.amount),
            )  # fmt: skip
        if record is None or account is None or record.is_deleted:
            # Deleted through the TCP API meanwhile: the money is already back.
            log.warning("settlement_cancel_of_deleted_record", order=target.finance_order)
            tx.put_journal(target._replace(cancelled_by=request.number))
            return self._cancel_answer(tx, request, now, Code.OK, "success (already reversed)")
        credit = is_credit(record.cmd)
        wallet = (account.credit if credit else account.balance) - record.profit
        if wallet < ZERO:
            # Not journaled: the platform retries the cancel, and a retry after the wallet was
            # topped up should succeed rather than replay this refusal.
            self.counters.reversals_refused += 1
            log.error(
                "settlement_reversal_refused", company=request.company,
                number=request.reverses, order=record.order, wallet_after=str(wallet),
            )  # fmt: skip
            msg = f"reversing {request.reverses!r} would take the wallet to {wallet}"
            return Effect({"answer": answer(Code.INSUFFICIENT_FUNDS, msg)}, None, None, None)
        deleted = record._replace(version=record.version + 1, state=DELETED, update_time=int(now))
        updated = (
            account.with_money(account.balance, wallet)
            if credit
            else account.with_money(wallet, account.credit)
        )
        tx.put_account(updated)
        tx.put_record(deleted)
        tx.put_journal(target._replace(cancelled_by=request.number))
        data = {
            "order": record.order,
            "amount": wallet_text(-record.profit, account.digits),
            "amountDigits": account.digits,
            "walletAmount": wallet_text(wallet, account.digits),
        }
        self._journal(
            tx, request, now, Code.OK, "success", data, record.login, -record.profit, record
        )
        outcome = {"answer": answer(Code.OK, "success", data), "record": deleted.to_wire()}
        return Effect(outcome, deleted, RecordEvent.DELETE, updated)

    def _cancel_answer(
        self, tx: Transaction, request: SettlementRequest, now: float, code: Code, msg: str
    ) -> Effect:
        self._journal(tx, request, now, code, msg, {}, None, ZERO)
        return Effect({"answer": answer(code, msg)}, None, None, None)

    # -- helpers -------------------------------------------------------------------------------

    def _journal(
        self,
        tx: Transaction,
        request: SettlementRequest,
        now: float,
        code: Code,
        msg: str,
        data: dict[str, Any],
        login: int | None,
        moved: Decimal,
        record: FinanceRecord | None = None,
    ) -> None:
        company, space, number = request.key
        tx.put_journal(
            JournalRow(
                company, space, number, request.kind, request.fingerprint, str(code), login,
                request.user_name, record.order if record is not None else None, str(moved),
                request.reverses,
                None, orjson.dumps({"msg": msg, "data": data}), now,
            )
        )  # fmt: skip

    def _cmd(self, delta: Decimal) -> int:
        if self.credit:
            return int(Cmd.CREDIT_IN if delta > 0 else Cmd.CREDIT_OUT)
        return int(Cmd.BALANCE_IN if delta > 0 else Cmd.BALANCE_OUT)

    def _with_wallet(self, account: Account, wallet: Decimal) -> Account:
        if self.credit:
            return account.with_money(account.balance, wallet)
        return account.with_money(wallet, account.credit)


def replayed(row: JournalRow) -> dict[str, Any]:
    """The answer a journal row was given, to send again."""
    stored = orjson.loads(row.answer_json)
    return {"code": row.code, "msg": stored["msg"], "data": stored["data"]}


def _at_digits(amount: Decimal, digits: int) -> Decimal:
    """`amount` at the currency's digits; refused if it has more decimals (trailing zeros aside)."""
    fixed = amount.quantize(Decimal(1).scaleb(-digits))
    if fixed != amount:
        raise Refusal(
            Code.INVALID_PARAMETER,
            f"amount {amount} has more decimals than the currency's {digits}",
        )
    return fixed


def _comment(request: SettlementRequest) -> str:
    """The finance record's comment: what the platform did, for the CRM reading the record."""
    what = request.operation or "TRANSFER_TO_CP"
    order = f" order {request.order_id}" if request.order_id is not None else ""
    return f"settlement {what}{order} #{request.number}"[:255]
