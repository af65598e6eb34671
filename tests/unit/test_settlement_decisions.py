"""The settlement decisions in detail, on the runtime's real State and Transaction: the exact
answers (docs/settlement.md section 4.2 quotes their `msg`), the journal rows a reconciliation
reads, the finance records, which answers need no commit, and the log lines of section 11."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from decimal import Decimal
from typing import Any

import orjson
import pytest
import structlog

import manager_gateway.settlement.rules as rules_module
from manager_gateway.runtime.journal import REQUESTS, TRANSFERS, JournalRow
from manager_gateway.runtime.operations import Effect, Operation, OpKind
from manager_gateway.runtime.records import FinanceRecord, RecordEvent
from manager_gateway.runtime.state import Transaction
from manager_gateway.settlement.codes import Code
from manager_gateway.settlement.rules import (
    MAX_LOGIN_DIGITS,
    Overtrading,
    SettlementRequest,
    WalletField,
    answer,
    replayed,
    wallet_text,
)
from tests.unit.test_settlement_rules import (
    LOGIN,
    SETTLEMENT,
    World,
    account,
    adjust,
    cancel,
    transfer,
)

#: Not a whole second: records carry int(now), journal rows now itself.
NOW = 1_800_000_123.75
SECONDS = 1_800_000_123


def decide(world: World, *requests: SettlementRequest, now: float = NOW) -> list[Effect]:
    """Decide `requests` as one batch and publish it; their effects."""
    tx = Transaction(world.state)
    effects = []
    for request in requests:
        op = Operation(OpKind.SETTLEMENT, "s", SETTLEMENT, request, ("s", "x"), "")
        effects.append(world.rules.decide(tx, op, now))
    world.state.apply(tx)
    return effects


def one(world: World, request: SettlementRequest, now: float = NOW) -> Effect:
    return decide(world, request, now=now)[0]


def journaled(msg: str, data: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"msg": msg, "data": data or {}})


def row(world: World, number: str, space: str = REQUESTS) -> JournalRow:
    return world.state.journal[(1, space, number)]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """The settlement rules' log lines."""
    with structlog.testing.capture_logs() as captured:
        # A fresh logger under the capture, whatever an earlier in-process CLI test configured.
        monkeypatch.setattr(rules_module, "log", structlog.get_logger("manager_gateway.settlement"))
        yield captured


# -- small parts -----------------------------------------------------------------------------


def test_answer_and_wallet_text() -> None:
    """An answer is the code as text, the sentence and `{}` without data; a wallet amount has
    exactly the currency's digits."""
    assert answer(Code.OK, "success") == {"code": "0", "msg": "success", "data": {}}
    assert answer(Code.FORBIDDEN, "no", {"a": 1}) == {
        "code": "FORBIDDEN",
        "msg": "no",
        "data": {"a": 1},
    }
    assert (wallet_text(Decimal("7"), 2), wallet_text(Decimal("7.5"), 0)) == ("7.00", "8")
    assert wallet_text(Decimal("-0.1"), 3) == "-0.100"


def test_transfers_have_a_number_space_of_their_own() -> None:
    assert transfer("t", "1").key == (1, TRANSFERS, "t")
    assert adjust("t", "1").key == (1, REQUESTS, "t")
    assert cancel("t", "a").key == (1, REQUESTS, "t")


def test_a_request_reads_its_own_journal_row_and_a_cancel_its_targets_too() -> None:
    """The rows the main loop must have in memory (or fetch) before deciding a request."""
    assert transfer("t", "1").journal_keys == ((1, TRANSFERS, "t"),)
    assert adjust("a", "1").journal_keys == ((1, REQUESTS, "a"),)
    assert cancel("c", "a").journal_keys == ((1, REQUESTS, "c"), (1, REQUESTS, "a"))


# -- an adjustment ---------------------------------------------------------------------------


def test_an_applied_adjustment_makes_a_record_and_journals_it() -> None:
    """OPEN_POSITION of 30.5: a CREDIT_OUT record stamped with the decision's second, the
    account after it, an ADD event, and a journal row holding the login, the order, what moved
    and the answer to replay."""
    world = World()
    request = adjust("a1", "30.5")
    effect = one(world, request)
    data = {"order": 1, "amount": "-30.50", "amountDigits": 2, "walletAmount": "69.50"}
    record = FinanceRecord(
        1, 1, LOGIN, 9, 3, Decimal("-30.50"), "settlement OPEN_POSITION order 7 #a1",
        SECONDS, SECONDS, SECONDS,
    )  # fmt: skip
    assert effect.outcome == {
        "answer": {"code": "0", "msg": "success", "data": data},
        "record": record.to_wire(),
    }
    assert (effect.record, effect.event_type, effect.durable) == (record, RecordEvent.ADD, False)
    assert effect.account == world.state.accounts[LOGIN]
    assert effect.account.credit == Decimal("69.50")
    assert world.state.record(1) == record
    assert row(world, "a1") == JournalRow(
        1, REQUESTS, "a1", "adjustment", request.fingerprint, "0", LOGIN, "u", 1, "-30.50",
        None, None, journaled("success", data), NOW,
    )  # fmt: skip


def test_the_record_comment_names_the_operation_order_and_number() -> None:
    """The comment a CRM reads: the operation (TRANSFER_TO_CP for a transfer), the platform's
    order when there is one, the number; never longer than a record comment may be (255)."""
    world = World()
    one(world, adjust("plain", "1", order_id=None))
    one(world, transfer("tx-9", "2"))
    one(world, adjust("n" * 300, "1", "NORMAL_CLOSE", order_id=12))
    comments = [world.state.record(order).comment for order in (1, 2, 3)]  # type: ignore[union-attr]
    assert comments[:2] == ["settlement OPEN_POSITION #plain", "settlement TRANSFER_TO_CP #tx-9"]
    assert comments[2] == ("settlement NORMAL_CLOSE order 12 #" + "n" * 300)[:255]
    assert len(comments[2]) == 255


def test_order_zero_is_named_in_the_comment() -> None:
    world = World()
    one(world, adjust("z", "1", order_id=0))
    assert world.state.record(1).comment == "settlement OPEN_POSITION order 0 #z"  # type: ignore[union-attr]


@pytest.mark.parametrize(("field", "cmds"), [("credit", (7, 9)), ("balance", (6, 8))])
def test_the_record_kind_follows_the_sign_even_below_one(
    field: WalletField, cmds: tuple[int, int]
) -> None:
    """A gain of 0.50 is an IN record and a loss of 0.50 an OUT one, of the wallet's kind."""
    world = World(field=field)
    world.state.accounts[LOGIN] = account(LOGIN, "demo", "10", balance="10")
    one(world, adjust("in", "0.5", "NORMAL_CLOSE"))
    one(world, adjust("out", "0.5"))
    kinds = tuple(world.state.record(order).cmd for order in (1, 2))  # type: ignore[union-attr]
    assert kinds == cmds


def test_an_open_may_take_the_wallet_to_exactly_zero() -> None:
    world = World()
    assert one(world, adjust("all", "100")).outcome["answer"]["data"]["walletAmount"] == "0.00"
    assert world.wallet() == Decimal("0.00")


@pytest.mark.parametrize(
    ("request_", "code", "msg", "login"),
    [
        (
            adjust("r", "100.01"),
            "INSUFFICIENT_FUNDS",
            "the wallet holds 100.00, less than 100.01",
            LOGIN,
        ),
        (
            adjust("r", "1", account_code="4242"),
            "ACCOUNT_NOT_FOUND",
            "no account with thirdServerCode '4242'",
            None,
        ),
        (
            adjust("r", "1", currency="EUR"),
            "CURRENCY_MISMATCH",
            "currency 'EUR' is not the account's currency 'USD'",
            None,  # refused by the lookup itself, as an unknown account is
        ),
        (
            adjust("r", "1.005"),
            "INVALID_PARAMETER",
            "amount 1.005 has more decimals than the currency's 2",
            LOGIN,
        ),
    ],
    ids=["funds", "account", "currency", "decimals"],
)
def test_a_refusal_is_journaled_with_its_sentence(
    request_: SettlementRequest, code: str, msg: str, login: int | None
) -> None:
    """A refused adjustment answers its code and the sentence naming the reason, moves nothing,
    and is journaled with it (the login when the account was found, no order, "0" moved)."""
    world = World()
    effect = one(world, request_)
    assert effect.outcome == {"answer": {"code": code, "msg": msg, "data": {}}}
    assert (effect.record, effect.event_type, effect.account) == (None, None, None)
    assert row(world, "r") == JournalRow(
        1, REQUESTS, "r", "adjustment", request_.fingerprint, code, login, "u", None, "0", None,
        None, journaled(msg), NOW,
    )  # fmt: skip


def test_logins_of_up_to_eighteen_digits_are_looked_up() -> None:
    """A thirdServerCode names a login of at most 18 digits: such an account is found; a
    longer code is ACCOUNT_NOT_FOUND even if an account has that login."""
    world = World()
    longest, longer = 10 ** (MAX_LOGIN_DIGITS - 1), 10**MAX_LOGIN_DIGITS
    for login in (longest, longer):
        world.state.accounts[login] = account(login, "demo", "5.00")
    found = one(world, adjust("a", "1", account_code=str(longest)))
    assert found.outcome["answer"]["data"]["walletAmount"] == "4.00"
    refused = one(world, adjust("b", "1", account_code=str(longer)))
    assert refused.outcome["answer"]["msg"] == f"no account with thirdServerCode '{longer}'"


@pytest.mark.parametrize(
    ("policy", "wallet", "moved"),
    [("ignore", "100.00", "0.00"), ("deduct_available", "0", "0.00")],
)
def test_nothing_to_move_is_journaled_with_no_record(
    policy: Overtrading, wallet: str, moved: str
) -> None:
    """Overtrading that takes nothing (ignored, or an empty wallet) answers `0` with order null
    and "0.00" (never "-0.00") moved: journaled, no record, no event."""
    world = World(overtrading=policy)
    world.state.accounts[LOGIN] = account(LOGIN, "demo", wallet)
    request = adjust("o", "-50", "ABNORMAL_OVERTRADING")
    effect = one(world, request)
    data = {
        "order": None,
        "amount": moved,
        "amountDigits": 2,
        "walletAmount": wallet_text(Decimal(wallet), 2),
    }
    msg = "success (nothing to move)"
    assert effect.outcome == {"answer": {"code": "0", "msg": msg, "data": data}}
    assert (effect.record, effect.event_type, effect.account) == (None, None, None)
    assert world.state.record_count == 0
    assert row(world, "o") == JournalRow(
        1, REQUESTS, "o", "adjustment", request.fingerprint, "0", LOGIN, "u", None, "0", None,
        None, journaled(msg, data), NOW,
    )  # fmt: skip


def test_a_transfer_journals_under_its_txid() -> None:
    world = World()
    request = transfer("tx", "25")
    one(world, request)
    stored = row(world, "tx", TRANSFERS)
    assert (stored.kind, stored.code, stored.login, stored.user_name) == (
        "transfer",
        "0",
        LOGIN,
        str(LOGIN),
    )
    assert (stored.finance_order, stored.amount, stored.reverses) == (1, "25.00", None)


# -- numbers seen before ---------------------------------------------------------------------


def test_a_replay_of_a_committed_request_is_answered_at_once() -> None:
    """A number decided in an earlier batch is answered from the journal without a commit
    (`durable`); decided earlier in the same batch, it waits for that batch's commit."""
    world = World()
    first, same_batch = decide(world, adjust("a", "10"), adjust("a", "10"))
    later = one(world, adjust("a", "10"))
    assert (first.durable, same_batch.durable, later.durable) == (False, False, True)
    assert same_batch.outcome == later.outcome == {"answer": first.outcome["answer"]}
    assert replayed(row(world, "a")) == first.outcome["answer"]
    mismatch_now = decide(world, adjust("b", "1"), adjust("b", "2"))[1]
    mismatch_later = one(world, adjust("b", "3"))
    assert (mismatch_now.durable, mismatch_later.durable) == (False, True)


def test_a_number_reused_for_other_content_or_another_kind_is_a_mismatch() -> None:
    """Other content, or another kind of request under the same number (even with the same
    fingerprint), is DUPLICATE_REQUEST_MISMATCH naming the number and what it was used for."""
    world = World()
    original = adjust("a", "10")
    one(world, original)
    other_kind = SettlementRequest(
        "cancel", 1, "a", original.fingerprint, str(LOGIN), "u", "USD", Decimal(10), reverses="z"
    )
    for request in (adjust("a", "11"), cancel("a", "zzz"), other_kind):
        assert one(world, request).outcome == {
            "answer": {
                "code": "DUPLICATE_REQUEST_MISMATCH",
                "msg": "number 'a' was already used for a different adjustment",
                "data": {},
            }
        }
    assert world.wallet() == Decimal("90.00")
    one(world, cancel("c", "a"))
    reused = one(world, adjust("c", "1")).outcome["answer"]["msg"]
    assert reused == "number 'c' was already used for a different cancel"


def test_a_late_adjustment_is_refused_and_logged(logs: list[MutableMapping[str, Any]]) -> None:
    """An adjustment whose number a cancel tombstoned is REQUEST_CANCELLED, counted, and logged
    as `settlement_late_adjustment` with its company and number; answered at once when the
    tombstone is committed."""
    world = World()
    _, same_batch = decide(world, cancel("c", "late"), adjust("late", "10"))
    later = one(world, adjust("late", "10"))
    refusal = {
        "code": "REQUEST_CANCELLED",
        "msg": "requestUniqueNo 'late' was cancelled before it arrived; not applied",
        "data": {},
    }
    assert same_batch.outcome == later.outcome == {"answer": refusal}
    assert (same_batch.durable, later.durable) == (False, True)
    assert world.rules.counters.late_after_tombstone == 2
    line = {"event": "settlement_late_adjustment", "company": 1, "number": "late"}
    assert logs == [{**line, "log_level": "warning"}] * 2
    assert row(world, "late").kind == "tombstone"  # the refusal journals nothing


# -- cancels -----------------------------------------------------------------------------------


def test_a_cancel_of_an_unknown_number_journals_a_tombstone_and_itself() -> None:
    world = World()
    request = cancel("c", "late")
    effect = one(world, request)
    msg = "no adjustment 'late' was received; it will not be applied"
    assert effect.outcome == {"answer": {"code": "US_0000002", "msg": msg, "data": {}}}
    assert row(world, "late") == JournalRow(
        1, REQUESTS, "late", "tombstone", "", "US_0000002", None, "u", None, "0", None, "c",
        b"{}", NOW,
    )  # fmt: skip
    assert row(world, "c") == JournalRow(
        1, REQUESTS, "c", "cancel", request.fingerprint, "US_0000002", None, "u", None, "0",
        "late", None, journaled(msg), NOW,
    )  # fmt: skip
    again = one(world, cancel("c2", "late"))
    assert again.outcome == {"answer": {"code": "US_0000002", "msg": msg, "data": {}}}
    assert (row(world, "c2").code, row(world, "c2").created_at) == ("US_0000002", NOW)
    assert world.rules.counters.tombstones == 1
    one(world, cancel("c3", "later"))
    assert world.rules.counters.tombstones == 2  # the gateway_settlement_tombstones_total metric


def test_a_cancel_naming_a_cancel_is_refused_and_not_journaled() -> None:
    world = World()
    one(world, adjust("a", "10"))
    one(world, cancel("c1", "a"))
    effect = one(world, cancel("c2", "c1"))
    msg = "reverseRequestUniqueNo 'c1' names a cancel"
    assert effect.outcome == {"answer": {"code": "INVALID_PARAMETER", "msg": msg, "data": {}}}
    assert (1, REQUESTS, "c2") not in world.state.journal
    assert world.wallet() == Decimal("100.00")


def test_a_cancel_of_a_refused_adjustment_names_its_code() -> None:
    world = World()
    one(world, adjust("r", "500"))
    effect = one(world, cancel("c", "r"))
    msg = "adjustment 'r' was received but not processed (INSUFFICIENT_FUNDS)"
    assert effect.outcome == {"answer": {"code": "US_0000001", "msg": msg, "data": {}}}
    assert row(world, "c")[5:11] == ("US_0000001", None, "u", None, "0", "r")
    assert row(world, "c").created_at == NOW


def test_cancels_that_reverse_nothing_say_why() -> None:
    """A cancel of an adjustment cancelled already, or of one that moved nothing, answers `0`
    with why and `{}`, and is journaled with nothing moved."""
    world = World(overtrading="ignore")
    one(world, adjust("a", "10"))
    one(world, cancel("c1", "a"))
    one(world, adjust("i", "-10", "ABNORMAL_OVERTRADING"))
    already, nothing = one(world, cancel("c2", "a")), one(world, cancel("c3", "i"))
    assert already.outcome == {"answer": answer(Code.OK, "success (already cancelled)")}
    assert nothing.outcome == {"answer": answer(Code.OK, "success (moved nothing)")}
    assert (already.record, nothing.record) == (None, None)
    assert row(world, "c2")[5:12] == ("0", None, "u", None, "0", "a", None)
    assert row(world, "c3").amount == "0"
    assert (row(world, "c2").created_at, row(world, "c3").created_at) == (NOW, NOW)
    assert row(world, "a").cancelled_by == "c1"
    assert world.wallet() == Decimal("100.00")


@pytest.mark.parametrize("field", ["credit", "balance"])
def test_a_reversal_deletes_the_record_and_journals_both_sides(field: WalletField) -> None:
    """The cancel deletes the adjustment's record (a new version, state 6, stamped with the
    cancel's second), gives the money back to the wallet it came from, and journals the
    reversal; the adjustment's row names the cancel."""
    world = World(field=field)
    world.state.accounts[LOGIN] = account(LOGIN, "demo", "100.00", balance="100.00")
    one(world, adjust("a", "10"), now=NOW - 60)
    request = cancel("c", "a")
    effect = one(world, request)
    original = world.state.record(1)
    assert original is not None and original.state == 6
    deleted = original
    assert (deleted.version, deleted.update_time, deleted.open_time) == (2, SECONDS, SECONDS - 60)
    data = {"order": 1, "amount": "10.00", "amountDigits": 2, "walletAmount": "100.00"}
    assert effect.outcome == {
        "answer": {"code": "0", "msg": "success", "data": data},
        "record": deleted.to_wire(),
    }
    assert (effect.record, effect.event_type) == (deleted, RecordEvent.DELETE)
    assert effect.account == world.state.accounts[LOGIN]
    money = world.state.accounts[LOGIN]
    assert (money.balance, money.credit) == (Decimal("100.00"), Decimal("100.00"))
    assert row(world, "a").cancelled_by == "c"
    assert row(world, "c") == JournalRow(
        1, REQUESTS, "c", "cancel", request.fingerprint, "0", LOGIN, "u", 1, "10.00", "a",
        None, journaled("success", data), NOW,
    )  # fmt: skip


def test_a_cancel_for_another_amount_still_reverses_the_adjustment_and_is_logged(
    logs: list[MutableMapping[str, Any]],
) -> None:
    """The reversal follows the adjustment's amount; a cancel naming another one is logged as
    `settlement_cancel_amount_differs`, one naming the same (in any sign) is not."""
    world = World()
    one(world, adjust("a", "10"))
    one(world, adjust("b", "-5", "ABNORMAL_OVERTRADING"))
    assert one(world, cancel("ca", "a", "12")).outcome["answer"]["data"]["amount"] == "10.00"
    one(world, cancel("cb", "b", "5"))
    assert world.wallet() == Decimal("100.00")
    assert logs == [
        {
            "event": "settlement_cancel_amount_differs",
            "company": 1,
            "number": "a",
            "original": "-10.00",
            "cancel": "12",
            "log_level": "warning",
        }
    ]


def test_a_cancel_of_a_record_deleted_over_tcp_is_logged(
    logs: list[MutableMapping[str, Any]],
) -> None:
    world = World()
    one(world, adjust("a", "10"))
    tx = Transaction(world.state)
    record = tx.record(1)
    assert record is not None
    tx.put_record(record._replace(version=2, state=6))
    world.state.apply(tx)
    effect = one(world, cancel("c", "a"))
    assert effect.outcome == {"answer": answer(Code.OK, "success (already reversed)")}
    assert (effect.record, effect.account) == (None, None)
    assert logs == [
        {"event": "settlement_cancel_of_deleted_record", "order": 1, "log_level": "warning"}
    ]
    assert row(world, "c")[5:12] == ("0", None, "u", None, "0", "a", None)
    assert row(world, "c").created_at == NOW


@pytest.mark.parametrize("missing", ["record", "account"])
def test_a_cancel_whose_record_or_account_is_missing_answers_already_reversed(
    missing: str,
) -> None:
    """An applied adjustment whose finance record, or that record's account, the ledger no
    longer has (a damaged ledger, which ledger verify names): the cancel moves nothing and
    answers 0, as for a record deleted over TCP."""
    world = World()
    tx = Transaction(world.state)
    if missing == "account":  # a record of login 555, which has no account
        tx.put_record(
            FinanceRecord(99, 1, 555, 9, 3, Decimal("-10.00"), "c", SECONDS, SECONDS, SECONDS)
        )
    tx.put_journal(
        JournalRow(
            1, REQUESTS, "lost", "adjustment", "f", "0", LOGIN, "u", 99, "-10.00", None, None,
            journaled("success"), NOW,
        )
    )  # fmt: skip
    world.state.apply(tx)
    effect = one(world, cancel("c", "lost"))
    assert effect.outcome == {"answer": answer(Code.OK, "success (already reversed)")}
    assert row(world, "lost").cancelled_by == "c"
    assert world.wallet() == Decimal("100.00")


def test_a_reversal_below_zero_is_refused_and_logged(logs: list[MutableMapping[str, Any]]) -> None:
    """A reversal that would leave the wallet below zero is INSUFFICIENT_FUNDS naming the
    wallet it would leave, logged `settlement_reversal_refused` (error); one that leaves it at
    exactly zero applies."""
    world = World()
    one(world, adjust("close", "50", "NORMAL_CLOSE"))
    one(world, adjust("spend", "140"))
    effect = one(world, cancel("c", "close", "50"))
    msg = "reversing 'close' would take the wallet to -40.00"
    assert effect.outcome == {"answer": {"code": "INSUFFICIENT_FUNDS", "msg": msg, "data": {}}}
    assert (1, REQUESTS, "c") not in world.state.journal
    assert logs == [
        {
            "event": "settlement_reversal_refused",
            "company": 1,
            "number": "close",
            "order": 1,
            "wallet_after": "-40.00",
            "log_level": "error",
        }
    ]
    one(world, adjust("top-up", "40", "NORMAL_CLOSE"))
    assert (
        one(world, cancel("c", "close", "50")).outcome["answer"]["data"]["walletAmount"] == "0.00"
    )
    assert world.rules.counters.reversals_refused == 1
    one(world, adjust("close-2", "5", "NORMAL_CLOSE"))
    one(world, adjust("spend-3", "5"))
    for _ in range(2):  # each refused retry counts: gateway_settlement_reversals_refused_total
        assert one(world, cancel("c3", "close-2", "5")).outcome["answer"]["code"] == (
            "INSUFFICIENT_FUNDS"
        )
    assert world.rules.counters.reversals_refused == 3
