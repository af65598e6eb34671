"""In-memory external systems for the kit's and simulator's tests: one that follows
SETTLEMENT.md exactly (`Wallet()`), and the same with one classic bug switched on (`Faults`).

Every request is decided synchronously, start to finish, so requests are serialized the way the
gateway's single-writer main loop serializes them; only the *answer* of a slow request waits.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ADJUST = "/api/external-system-credit-limit-adjustment"
CANCEL = "/api/cancel-external-system-credit-limit-adjustment"
BALANCE = "/api/get-user-amount"
TRANSFER = "/api/transfer-to-cp"
OPERATIONS = ("OPEN_POSITION", "NORMAL_CLOSE", "ABNORMAL_OVERTRADING")
_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Faults:
    """One classic bug each; all off is the correct wallet."""

    duplicates_applied: bool = False  # an adjustment number seen before is applied again
    tombstones_ignored: bool = False  # a cancel of an unknown number leaves no tombstone
    refused_as_unknown: bool = False  # a cancel of a refused adjustment answers US_0000002
    double_reversal: bool = False  # cancels are not idempotent: each one reverses again
    wrong_decimals: bool = False  # balances written like floats: "1000.0" for 2 digits
    unavailable_every: int = 0  # (legal) every Nth adjustment applied, answered SERVICE_UNAVAILABLE
    drop_reversal_every: int = 0  # every Nth reversal answered 0 without moving the money back
    slow_every: int = 0  # (legal) every Nth adjustment applied at once, answered after slow_s
    slow_s: float = 0.0
    cancels_unavailable: bool = False  # every cancel answered SERVICE_UNAVAILABLE, nothing done


@dataclass
class Account:
    currency: str = "USD"
    digits: int = 2
    amount: Decimal = Decimal("1000.00")


@dataclass
class Entry:
    """The journal row of an adjustment number (a tombstone has no fingerprint)."""

    fingerprint: tuple[Any, ...] | None
    state: str  # applied | refused | ignored | cancelled | tombstone
    login: int = 0
    moved: Decimal = Decimal(0)
    answer: tuple[str, str, dict[str, Any]] = ("0", "success", {})


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] | None
    delay_s: float = 0.0


class Invalid(Exception):
    """INVALID_PARAMETER, naming the field."""


@dataclass
class Wallet:
    """An external system over `accounts` (login -> Account)."""

    accounts: dict[int, Account] = field(default_factory=lambda: {7001: Account()})
    overtrading: str = "deduct_available"  # or "deduct", "ignore"
    seed_style_data: bool = False  # success data {} as in the platform's seed
    missing_trace_status: int = 200  # 200: INVALID_PARAMETER envelope; else that HTTP status
    max_skew_s: float = 300.0
    token: str | None = None
    faults: Faults = field(default_factory=Faults)
    journal: dict[str, Entry] = field(default_factory=dict)
    cancels: dict[str, tuple[tuple[Any, ...], tuple[str, str, dict[str, Any]]]] = field(
        default_factory=dict
    )
    transfers: dict[str, tuple[tuple[Any, ...], tuple[str, str, dict[str, Any]]]] = field(
        default_factory=dict
    )
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, headers)
    _orders: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _applied: int = 0
    _reversals: int = 0

    # -- HTTP entry point --------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request; `headers` have lower-case names."""
        self.seen.append((path, dict(headers)))
        routes = {
            ADJUST: self._adjust,
            CANCEL: self._cancel,
            BALANCE: self._balance,
            TRANSFER: self._transfer,
        }
        if path not in routes:
            return Reply(404, None)
        if method != "POST":
            return Reply(405, None)
        started = time.perf_counter()
        trace = headers.get("trace")
        if trace is None and path != TRANSFER and self.missing_trace_status != 200:
            return Reply(self.missing_trace_status, None)
        try:
            if trace is None and path != TRANSFER:
                raise Invalid("header trace is required")
            refusal = self._check_headers(path, headers)
            if refusal is not None:
                code, msg, data, delay = refusal, refusal, {}, 0.0
            else:
                request = _json_object(body)
                code, msg, data, delay = routes[path](request)
        except Invalid as exc:
            code, msg, data, delay = "INVALID_PARAMETER", str(exc), {}, 0.0
        envelope = {
            "code": code,
            "msg": msg,
            "msgParams": "",
            "tm": int((time.perf_counter() - started) * 1000),
            "trace": trace or "",
            "bizCode": "settlement",
            "data": data,
            "ok": code == "0",
            "fail": code != "0",
        }
        return Reply(200, envelope, delay)

    def _check_headers(self, path: str, headers: Mapping[str, str]) -> str | None:
        company = headers.get("companyid")
        if company is not None and not company.lstrip("-").isdigit():
            raise Invalid("header companyId must be an integer")
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return "FORBIDDEN"
        stamp = headers.get("timestamp")
        if stamp is None:
            if path == ADJUST:
                raise Invalid("header timestamp is required")
            return None
        if not (stamp.isdigit() and len(stamp) == 13):
            raise Invalid("header timestamp must be 13-digit milliseconds")
        if abs(int(stamp) / 1000 - time.time()) > self.max_skew_s:
            return "REQUEST_EXPIRED"
        return None

    # -- routes (each returns code, msg, data, answer delay) -----------------------------------

    def _adjust(self, body: dict[str, Any]) -> tuple[str, str, dict[str, Any], float]:
        fields = _adjustment_fields(body)
        number = fields["requestUniqueNo"]
        fingerprint = tuple(sorted((k, v) for k, v in fields.items() if k != "requestTime"))
        entry = self.journal.get(number)
        if entry is not None and entry.state == "tombstone":
            return "REQUEST_CANCELLED", f"{number} was cancelled before it arrived", {}, 0.0
        if entry is not None and not self.faults.duplicates_applied:
            if entry.fingerprint != fingerprint:
                return "DUPLICATE_REQUEST_MISMATCH", f"{number} was seen with other fields", {}, 0.0
            return (*entry.answer, 0.0)
        login, account, refusal = self._account(fields["thirdServerCode"], fields["currency"])
        if refusal is not None:
            answer = (refusal, refusal, {})
            self.journal[number] = Entry(fingerprint, "refused", answer=answer)
            return (*answer, 0.0)
        assert account is not None
        self._check_digits(fields["amount"], fields["amountDigits"], account)
        state, moved = self._decide(fields["operationType"], fields["amount"], account)
        if state == "refused":
            answer = ("INSUFFICIENT_FUNDS", "the wallet holds less", {})
            self.journal[number] = Entry(fingerprint, state, login, answer=answer)
            return (*answer, 0.0)
        account.amount += moved
        data: dict[str, Any] = {}
        if not self.seed_style_data:
            data = {
                "order": next(self._orders) if moved else None,
                "amount": _fmt(moved, account.digits),
                "amountDigits": account.digits,
                "walletAmount": _fmt(account.amount, account.digits),
            }
        answer = ("0", "success", data)
        self.journal[number] = Entry(fingerprint, state, login, moved, answer)
        self._applied += 1
        faults = self.faults
        if faults.unavailable_every and self._applied % faults.unavailable_every == 0:
            return "SERVICE_UNAVAILABLE", "not decided in time", {}, 0.0
        slow = faults.slow_every and self._applied % faults.slow_every == 0
        return (*answer, faults.slow_s if slow else 0.0)

    def _decide(self, operation: str, amount: Decimal, account: Account) -> tuple[str, Decimal]:
        """(state, signed movement) of an adjustment on `account`."""
        if operation == "NORMAL_CLOSE":
            return "applied", amount
        if operation == "OPEN_POSITION":
            return ("applied", -amount) if account.amount >= amount else ("refused", Decimal(0))
        if self.overtrading == "ignore":
            return "ignored", Decimal(0)
        if self.overtrading == "deduct":
            enough = account.amount >= -amount
            return ("applied", amount) if enough else ("refused", Decimal(0))
        return "applied", max(amount, -account.amount)

    def _cancel(self, body: dict[str, Any]) -> tuple[str, str, dict[str, Any], float]:
        fields = _cancel_fields(body)
        if self.faults.cancels_unavailable:
            return "SERVICE_UNAVAILABLE", "draining", {}, 0.0
        number, target = fields["requestUniqueNo"], fields["reverseRequestUniqueNo"]
        fingerprint = tuple(sorted((k, v) for k, v in fields.items() if k != "requestTime"))
        seen = self.cancels.get(number)
        if seen is not None and not self.faults.double_reversal:
            if seen[0] != fingerprint:
                return "DUPLICATE_REQUEST_MISMATCH", f"{number} was seen with other fields", {}, 0.0
            return (*seen[1], 0.0)
        answer = self._reverse(target)
        if answer[0] != "INSUFFICIENT_FUNDS":  # every other answer is final for this number
            self.cancels[number] = (fingerprint, answer)
        return (*answer, 0.0)

    def _reverse(self, target: str) -> tuple[str, str, dict[str, Any]]:
        entry = self.journal.get(target)
        if entry is None or entry.state == "tombstone":
            if entry is None and not self.faults.tombstones_ignored:
                self.journal[target] = Entry(None, "tombstone")
            return "US_0000002", f"no adjustment {target} was received", {}
        if entry.state == "refused":
            code = "US_0000002" if self.faults.refused_as_unknown else "US_0000001"
            return code, f"{target} was refused", {}
        if entry.state == "ignored" or (
            entry.state == "cancelled" and not self.faults.double_reversal
        ):
            return "0", "success", {}
        account = self.accounts[entry.login]
        if account.amount - entry.moved < 0:
            return "INSUFFICIENT_FUNDS", "the reversal would take the wallet below zero", {}
        self._reversals += 1
        every = self.faults.drop_reversal_every
        if not (every and self._reversals % every == 0):
            account.amount -= entry.moved
        entry.state = "cancelled"
        return "0", "success", {"amount": _fmt(-entry.moved, account.digits)}

    def _balance(self, body: dict[str, Any]) -> tuple[str, str, dict[str, Any], float]:
        code = _text(body, "thirdServerCode", 32)
        user = _text(body, "userName", 48)
        currency = _text(body, "currency", 16)
        _, account, refusal = self._account(code, currency)
        if refusal is not None:
            return refusal, refusal, {}, 0.0
        assert account is not None
        amount = _fmt(account.amount, account.digits)
        if self.faults.wrong_decimals:
            amount = str(float(account.amount))
        data = {"userName": user, "currency": currency, "amount": amount}
        return "0", "success", {**data, "amountDigits": account.digits}, 0.0

    def _transfer(self, body: dict[str, Any]) -> tuple[str, str, dict[str, Any], float]:
        login_text = body.get("username", body.get("thirdServerCode"))
        digits = body.get("amountDigist", body.get("amountDigits"))
        fields = {
            "login": _text({"username": login_text}, "username", 32),
            "currency": _text(body, "currency", 16),
            "amount": _amount(body, "amount"),
            "digits": _integer({"amountDigist": digits}, "amountDigist"),
            "txid": _text(body, "txid", 48),
            "remark": _text(body, "remark", 200),
        }
        if fields["amount"] <= 0:
            raise Invalid("amount must be positive")
        fingerprint = tuple(sorted(fields.items()))
        seen = self.transfers.get(fields["txid"])
        if seen is not None:
            if seen[0] != fingerprint:
                return "DUPLICATE_REQUEST_MISMATCH", "txid seen with other fields", {}, 0.0
            return (*seen[1], 0.0)
        _, account, refusal = self._account(fields["login"], fields["currency"])
        if refusal is not None:
            return refusal, refusal, {}, 0.0
        assert account is not None
        self._check_digits(fields["amount"], fields["digits"], account)
        account.amount += fields["amount"]
        answer = ("0", "success", {"amount": _fmt(fields["amount"], account.digits)})
        self.transfers[fields["txid"]] = (fingerprint, answer)
        return (*answer, 0.0)

    # -- helpers -----------------------------------------------------------------------------

    def _account(self, code: str, currency: str) -> tuple[int, Account | None, str | None]:
        login = int(code) if code.isdigit() else -1
        account = self.accounts.get(login)
        if account is None:
            return login, None, "ACCOUNT_NOT_FOUND"
        if currency != account.currency:
            return login, None, "CURRENCY_MISMATCH"
        return login, account, None

    @staticmethod
    def _check_digits(amount: Decimal, digits: int, account: Account) -> None:
        decimals = max(0, -int(amount.normalize().as_tuple().exponent))
        if decimals > digits or decimals > account.digits:
            raise Invalid(f"amount {amount} has more decimals than allowed")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body, parse_float=Decimal)
    except ValueError:
        raise Invalid("the body is not JSON") from None
    if not isinstance(value, dict):
        raise Invalid("the body is not a JSON object")
    return value


def _adjustment_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields = _common_fields(body)
    operation = _text(body, "operationType", 32)
    if operation not in OPERATIONS:
        raise Invalid(f"operationType {operation!r} is unknown")
    fields["operationType"] = operation
    fields["orderId"] = _integer(body, "orderId")
    if (fields["amount"] < 0) != (operation == "ABNORMAL_OVERTRADING"):
        raise Invalid(f"amount has the wrong sign for {operation}")
    return fields


def _cancel_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields = _common_fields(body)
    fields["reverseRequestUniqueNo"] = _text(body, "reverseRequestUniqueNo", 48)
    fields["cancelRemark"] = _text(body, "cancelRemark", 200)
    if "orderId" in body:
        fields["orderId"] = _integer(body, "orderId")
    if fields["amount"] <= 0:
        raise Invalid("a cancel's amount must be positive")
    return fields


def _common_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields = {
        "thirdServerCode": _text(body, "thirdServerCode", 32),
        "userName": _text(body, "userName", 48),
        "currency": _text(body, "currency", 16),
        "bizType": _integer(body, "bizType"),
        "amount": _amount(body, "amount"),
        "amountDigits": _integer(body, "amountDigits"),
        "requestUniqueNo": _text(body, "requestUniqueNo", 48),
        "requestTime": _integer(body, "requestTime"),
        "ip": _text(body, "ip", 64),
    }
    if not 0 <= fields["amountDigits"] <= 8:
        raise Invalid("amountDigits must be 0 to 8")
    if not 0 < abs(fields["amount"]) <= 1_000_000_000:
        raise Invalid("amount out of range")
    return fields


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Invalid(f"{name} must be a string of 1 to {limit} characters")
    return value


def _integer(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"{name} must be an integer")
    return value


def _amount(body: dict[str, Any], name: str) -> Decimal:
    value = body.get(name)
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return Decimal(value)
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return Decimal(value)
    raise Invalid(f"{name} must be a decimal string")


def _fmt(amount: Decimal, digits: int) -> str:
    exact = amount.quantize(Decimal(1).scaleb(-digits))
    return f"{abs(exact) if exact == 0 else exact:f}"
