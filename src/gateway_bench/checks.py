"""Every answer judged against its request: ok, an error by code, or a mismatch.

A throughput figure is worth nothing if the answers are wrong, so the load generator checks each
one, cheaply (plain comparisons, no models):

* the answer must echo the request's `extID`; one that nobody asked for is a mismatch too;
* a non-200 answer is an *error*, counted by `"<status>/<error code>"`;
* a 200 answer of a `*Sync` finance command carries the trade record: `login`, `cmd` (6, 7, 8, 9),
  `profit` (== the amount, compared in whole cents, never as floats) and `comment` match the
  request, and `order` is a positive int (docs/protocol.md sections 5 and 6);
* a 200 answer of an async finance command is the ack
  `{"accepted": true, "order", "state": 10, "login", "cmd", "amount"}`, matching likewise;
* `GetAccountByLogin` echoes the login, `GetTradeByOrder` the order.

`mismatch_reason()` is the pure rule; `AnswerChecker` keeps the counts and a few examples.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypeGuard

FINANCE_CMD = {"BalanceIn": 6, "CreditIn": 7, "BalanceOut": 8, "CreditOut": 9}
SYNC_FINANCE_CMD = {f"{name}Sync": cmd for name, cmd in FINANCE_CMD.items()}
STATE_NEW, STATE_UPDATED = 10, 11
DEFAULT_BALANCE_COMMENT = "Finance"  # what the gateway records for Balance* without a comment
MAX_EXAMPLES = 5


def mismatch_reason(
    command: str, ext_id: str, data: dict[str, Any], answer: dict[str, Any]
) -> str | None:
    """Why `answer` does not answer this request (`"field: got X, sent Y"`), or None if it does.

    An error answer (status other than 200) that echoes the extID is not a mismatch: it is
    counted as an error by `AnswerChecker`.
    """
    if answer.get("extID") != ext_id:
        return f"extID: got {answer.get('extID')!r}, sent {ext_id!r}"
    status = answer.get("status")
    if not _is_int(status):
        return f"status: got {status!r}, not an int"
    if status != 200:
        return None
    result = answer.get("data")
    if command in SYNC_FINANCE_CMD:
        return _trade_record_reason(SYNC_FINANCE_CMD[command], command, data, result)
    if command in FINANCE_CMD:
        return _ack_reason(FINANCE_CMD[command], data, result)
    if command == "GetAccountByLogin":
        return _echo_reason("login", data, result)
    if command == "GetTradeByOrder":
        return _echo_reason("order", data, result)
    return None


def _trade_record_reason(cmd: int, command: str, sent: dict[str, Any], record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"data: got {type(record).__name__}, not a trade record"
    if (reason := _common_reason(cmd, sent, record, "profit")) is not None:
        return reason
    comment = sent.get("comment")
    if comment is None and command.startswith("Balance"):
        comment = DEFAULT_BALANCE_COMMENT
    if record.get("comment") != comment:
        return f"comment: got {record.get('comment')!r}, sent {comment!r}"
    return None


def _ack_reason(cmd: int, sent: dict[str, Any], ack: Any) -> str | None:
    if not isinstance(ack, dict):
        return f"data: got {type(ack).__name__}, not an ack"
    if ack.get("accepted") is not True:
        return f"accepted: got {ack.get('accepted')!r}, not true"
    states = (STATE_NEW, STATE_UPDATED) if "order" in sent else (STATE_NEW,)
    if ack.get("state") not in states or not _is_int(ack.get("state")):
        return f"state: got {ack.get('state')!r}, expected {' or '.join(map(str, states))}"
    return _common_reason(cmd, sent, ack, "amount")


def _common_reason(
    cmd: int, sent: dict[str, Any], got: dict[str, Any], money_field: str
) -> str | None:
    """login, cmd, order and the amount: shared by trade records and acks."""
    if not _is_int(got.get("login")) or got.get("login") != sent.get("login"):
        return f"login: got {got.get('login')!r}, sent {sent.get('login')!r}"
    if not _is_int(got.get("cmd")) or got.get("cmd") != cmd:
        return f"cmd: got {got.get('cmd')!r}, expected {cmd}"
    order = got.get("order")
    if not _is_int(order) or order <= 0:
        return f"order: got {order!r}, not a positive int"
    if "order" in sent and order != sent["order"] and got.get("state") == STATE_UPDATED:
        return f"order: got {order!r}, sent {sent['order']!r}"
    got_cents, sent_cents = cents(got.get(money_field)), cents(sent.get("amount"))
    if got_cents is None or got_cents != sent_cents:
        return f"{money_field}: got {got.get(money_field)!r}, sent {sent.get('amount')!r}"
    return None


def _echo_reason(field: str, sent: dict[str, Any], result: Any) -> str | None:
    if not isinstance(result, dict):
        return f"data: got {type(result).__name__}, not an object"
    if not _is_int(result.get(field)) or result.get(field) != sent.get(field):
        return f"{field}: got {result.get(field)!r}, sent {sent.get(field)!r}"
    return None


def cents(amount: Any) -> int | None:
    """A JSON number as whole cents (rounded), or None when it is not a number.

    Money is compared in cents, never with float ==: 0.1 + 0.2 and 0.3 are the same 30 cents.
    """
    if type(amount) is int:
        return amount * 100
    if type(amount) is float and amount == amount and abs(amount) < 1e15:  # not NaN, not huge
        return round(amount * 100)
    return None


def _is_int(value: Any) -> TypeGuard[int]:
    return type(value) is int  # bool is an int subclass, and never a valid login or order


class AnswerChecker:
    """Counts ok answers, errors by code and mismatches by field; keeps a few examples."""

    def __init__(self, max_examples: int = MAX_EXAMPLES) -> None:
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.mismatches = 0
        self.mismatch_fields: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []
        self.max_examples = max_examples

    def check(
        self, command: str, ext_id: str, data: dict[str, Any], answer: dict[str, Any]
    ) -> bool:
        """Judge one answer; True when it is a 200 that fits the request."""
        reason = mismatch_reason(command, ext_id, data, answer)
        if reason is not None:
            self._mismatch(
                reason, {"command": command, "extID": ext_id, "data": data, "answer": answer}
            )
            return False
        status = answer["status"]
        if status == 200:
            self.ok += 1
            return True
        self.errors[f"{status}/{answer.get('error', '?')}"] += 1
        return False

    def failure(self, key: str) -> None:
        """A request that got no answer: `"client/TIMEOUT"`, `"client/CONNECTION_LOST"`."""
        self.errors[key] += 1

    def orphan(self, answer: dict[str, Any]) -> None:
        """An answer whose extID nobody was waiting for (unknown, or a duplicate)."""
        self._mismatch(
            f"extID: got {answer.get('extID')!r}, which no request is waiting for",
            {"answer": answer},
        )

    def _mismatch(self, reason: str, example: dict[str, Any]) -> None:
        self.mismatches += 1
        self.mismatch_fields[reason.split(":", 1)[0]] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append({"reason": reason, **example})

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())
