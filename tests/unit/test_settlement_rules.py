"""The settlement decision table (docs/settlement.md), on the runtime's real State and Transaction.

Each batch is a `Transaction` the rules write into, published with `State.apply` as the main loop
does after a durable commit; nothing here touches a disk or a socket.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from manager_gateway.runtime.journal import REQUESTS
from manager_gateway.runtime.operations import Effect, Operation, OpKind
from manager_gateway.runtime.records import Account
from manager_gateway.runtime.state import State, Transaction
from manager_gateway.runtime.storage import Snapshot
from manager_gateway.session.access import Access, SessionType
from manager_gateway.settlement.rules import Overtrading, Rules, SettlementRequest, WalletField

NOW = 1_800_000_000.0
LOGIN = 1001
VIP = 2001
ARABIC_1001 = "\u0661\u0660\u0660\u0661"  # digits to str.isdigit(), but not ASCII ones
SETTLEMENT = Access("settlement", SessionType.ADMIN, ("demo",), float("inf"))
SETTLEMENT.type = SessionType.MANAGER  # group masks apply: only "demo" is open to settlement


def account(login: int, group: str, credit: str, balance: str = "0") -> Account:
    return Account(
        login, group, "n", "e", "h", 100, 1, "USD", 2, Decimal(balance), Decimal(credit), 0
    )


class World:
    """One committed state and the rules; `run` decides requests as one batch."""

    def __init__(self, field: WalletField = "credit", overtrading: Overtrading = "deduct") -> None:
        accounts = {LOGIN: account(LOGIN, "demo", "100.00"), VIP: account(VIP, "vip", "100.00")}
        self.state = State(Snapshot(accounts, {}, [], [], 1, 1000), window=1000)
        self.rules = Rules(field, overtrading, SETTLEMENT)

    def run(self, *requests: SettlementRequest) -> list[dict[str, Any]]:
        """Decide `requests` in one batch, publish it, and return their answers."""
        tx = Transaction(self.state)
        effects: list[Effect] = []
        for request in requests:
            op = Operation(OpKind.SETTLEMENT, "s", SETTLEMENT, request, ("s", "x"), "")
            effects.append(self.rules.decide(tx, op, NOW))
        self.state.apply(tx)
        return [effect.outcome["answer"] for effect in effects]

    def one(self, request: SettlementRequest) -> dict[str, Any]:
        return self.run(request)[0]

    def wallet(self, login: int = LOGIN) -> Decimal:
        return self.state.accounts[login].credit


def adjust(
    number: str, amount: str, operation: str = "OPEN_POSITION", **kw: Any
) -> SettlementRequest:
    fields: dict[str, Any] = {
        "company": 1,
        "fingerprint": f"{operation}/{amount}/{kw.get('account_code', LOGIN)}",
        "account_code": str(LOGIN),
        "user_name": "u",
        "currency": "USD",
        "order_id": 7,
        **kw,
    }
    return SettlementRequest(
        "adjustment", number=number, amount=Decimal(amount), operation=operation, **fields
    )


def cancel(number: str, reverses: str, amount: str = "10") -> SettlementRequest:
    return SettlementRequest(
        "cancel", 1, number, f"cancel/{reverses}", str(LOGIN), "u", "USD", Decimal(amount),
        reverses=reverses,
    )  # fmt: skip


def transfer(txid: str, amount: str) -> SettlementRequest:
    return SettlementRequest(
        "transfer", 1, txid, f"t/{amount}", str(LOGIN), str(LOGIN), "USD", Decimal(amount)
    )


def test_open_deducts_and_close_adds() -> None:
    """OPEN_POSITION deducts, NORMAL_CLOSE adds; each makes a finance record of the wallet's kind
    and answers the moved amount and the wallet after it."""
    world = World()
    opened = world.one(adjust("a1", "30.5"))
    assert opened == {
        "code": "0",
        "msg": "success",
        "data": {"order": 1, "amount": "-30.50", "amountDigits": 2, "walletAmount": "69.50"},
    }
    closed = world.one(adjust("a2", "40", "NORMAL_CLOSE"))
    assert closed["data"] == {
        "order": 2,
        "amount": "40.00",
        "amountDigits": 2,
        "walletAmount": "109.50",
    }
    assert world.wallet() == Decimal("109.50")
    record = world.state.record(1)
    assert record is not None and (record.cmd, record.profit) == (9, Decimal("-30.50"))
    assert "OPEN_POSITION order 7 #a1" in record.comment
    assert world.state.record(2).cmd == 7  # type: ignore[union-attr]


def test_balance_field_makes_balance_records() -> None:
    """With settlement_field = balance the wallet is the balance: BalanceIn/Out records."""
    world = World(field="balance")
    world.state.accounts[LOGIN] = account(LOGIN, "demo", "0", balance="50")
    assert world.one(adjust("a1", "20"))["data"]["walletAmount"] == "30.00"
    assert world.state.record(1).cmd == 8  # type: ignore[union-attr]
    assert world.one(adjust("a2", "5", "NORMAL_CLOSE"))["code"] == "0"
    assert world.state.record(2).cmd == 6  # type: ignore[union-attr]
    assert world.state.accounts[LOGIN].balance == Decimal("35")


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (adjust("r", "100.01"), "INSUFFICIENT_FUNDS"),
        (adjust("r", "1", account_code="4242"), "ACCOUNT_NOT_FOUND"),
        (adjust("r", "1", account_code=str(VIP)), "ACCOUNT_NOT_FOUND"),  # group not open
        (adjust("r", "1", account_code="10O1"), "ACCOUNT_NOT_FOUND"),
        (adjust("r", "1", account_code=ARABIC_1001), "ACCOUNT_NOT_FOUND"),
        (adjust("r", "1", currency="EUR"), "CURRENCY_MISMATCH"),
        (adjust("r", "1.005"), "INVALID_PARAMETER"),  # more decimals than the currency
    ],
    ids=["funds", "unknown", "group", "letters", "arabic-digits", "currency", "decimals"],
)
def test_refusals_move_nothing_and_are_journaled(request_: SettlementRequest, code: str) -> None:
    """A refused adjustment moves nothing, and its number is journaled with the refusal, so its
    replay answers the same and a cancel of it answers US_0000001."""
    world = World()
    first = world.one(request_)
    assert first["code"] == code
    assert world.wallet() == Decimal("100.00")
    assert world.state.record_count == 0
    assert world.one(request_) == first
    assert world.one(cancel("c", "r"))["code"] == "US_0000001"
    assert world.wallet() == Decimal("100.00")


def test_replay_answers_the_same_and_moves_once() -> None:
    """The same adjustment again, in the same batch or a later one, answers exactly the same and
    moves nothing more; the same number with other content is a mismatch."""
    world = World()
    first, same_batch = world.run(adjust("a", "10"), adjust("a", "10"))
    assert same_batch == first
    assert world.one(adjust("a", "10")) == first
    assert world.one(adjust("a", "11"))["code"] == "DUPLICATE_REQUEST_MISMATCH"
    assert world.one(cancel("a", "zzz"))["code"] == "DUPLICATE_REQUEST_MISMATCH"
    assert world.wallet() == Decimal("90.00")
    assert world.state.record_count == 1


def test_cancel_of_an_applied_adjustment_reverses_it_once() -> None:
    """Cancel of an applied adjustment deletes its record (state 6) and gives the money back;
    the cancel again, or another cancel of it, answers 0 and moves nothing."""
    world = World()
    world.one(adjust("a", "10"))
    reversed_ = world.one(cancel("c1", "a"))
    assert reversed_["code"] == "0"
    assert reversed_["data"]["amount"] == "10.00"
    assert world.wallet() == Decimal("100.00")
    record = world.state.record(1)
    assert record is not None and (record.state, record.version) == (6, 2)
    assert world.one(cancel("c1", "a")) == reversed_
    assert world.one(cancel("c2", "a"))["code"] == "0"
    assert world.wallet() == Decimal("100.00")
    assert world.state.journal[(1, REQUESTS, "a")].cancelled_by == "c1"


def test_cancel_in_the_same_batch_as_its_adjustment() -> None:
    """An adjustment and its cancel decided in one batch: applied, then reversed."""
    world = World()
    applied, reversed_ = world.run(adjust("a", "10"), cancel("c", "a"))
    assert (applied["code"], reversed_["code"]) == ("0", "0")
    assert world.wallet() == Decimal("100.00")


def test_cancel_of_an_unknown_number_leaves_a_tombstone() -> None:
    """Cancel of a number never seen answers US_0000002 and leaves a tombstone: the late
    adjustment is REQUEST_CANCELLED and never applied, however often it comes."""
    world = World()
    assert world.one(cancel("c", "late"))["code"] == "US_0000002"
    assert world.one(adjust("late", "10"))["code"] == "REQUEST_CANCELLED"
    assert world.one(adjust("late", "10"))["code"] == "REQUEST_CANCELLED"
    assert world.one(cancel("c2", "late"))["code"] == "US_0000002"
    assert world.wallet() == Decimal("100.00")
    assert world.rules.counters.tombstones == 1
    assert world.rules.counters.late_after_tombstone == 2


def test_cancel_then_adjustment_in_one_batch() -> None:
    """The cancel overtaking its adjustment in one batch: tombstone first, adjustment refused."""
    world = World()
    tombstoned, late = world.run(cancel("c", "a"), adjust("a", "10"))
    assert (tombstoned["code"], late["code"]) == ("US_0000002", "REQUEST_CANCELLED")
    assert world.wallet() == Decimal("100.00")


def test_reversal_below_zero_is_refused_and_not_journaled() -> None:
    """A close that was spent cannot be reversed below zero: INSUFFICIENT_FUNDS, nothing moves,
    and a retry of that cancel after the wallet is topped up succeeds."""
    world = World()
    world.one(adjust("close", "50", "NORMAL_CLOSE"))
    world.one(adjust("spend", "140"))
    assert world.wallet() == Decimal("10.00")
    assert world.one(cancel("c", "close"))["code"] == "INSUFFICIENT_FUNDS"
    assert world.wallet() == Decimal("10.00")
    assert world.rules.counters.reversals_refused == 1
    world.one(adjust("top-up", "40", "NORMAL_CLOSE"))
    assert world.one(cancel("c", "close"))["code"] == "0"
    assert world.wallet() == Decimal("0.00")


@pytest.mark.parametrize(
    ("policy", "wallet", "code", "moved"),
    [
        ("deduct_available", "30.00", "0", "-30.00"),
        ("deduct_available", "0", "0", "0.00"),
        ("deduct", "30.00", "INSUFFICIENT_FUNDS", None),
        ("ignore", "30.00", "0", "0.00"),
    ],
)
def test_overtrading_beyond_the_wallet(
    policy: Overtrading, wallet: str, code: str, moved: str | None
) -> None:
    """ABNORMAL_OVERTRADING of 50 against a smaller wallet, under each policy; a cancel of it
    then answers 0 (applied or ignored) or US_0000001 (refused), and restores the wallet."""
    world = World(overtrading=policy)
    world.state.accounts[LOGIN] = account(LOGIN, "demo", wallet)
    answer = world.one(adjust("o", "-50", "ABNORMAL_OVERTRADING"))
    assert answer["code"] == code
    if moved is not None:
        assert answer["data"]["amount"] == moved
        assert world.wallet() == Decimal(wallet) + Decimal(moved)
    undo = world.one(cancel("c", "o", "50"))
    assert undo["code"] == ("0" if code == "0" else "US_0000001")
    assert world.wallet() == Decimal(wallet)


def test_overtrading_within_the_wallet_deducts_it_all() -> None:
    """A loss the wallet covers is deducted whole under deduct_available and deduct."""
    for policy in ("deduct_available", "deduct"):
        world = World(overtrading=policy)  # type: ignore[arg-type]
        assert world.one(adjust("o", "-40", "ABNORMAL_OVERTRADING"))["code"] == "0"
        assert world.wallet() == Decimal("60.00")


def test_transfer_credits_once_per_txid() -> None:
    """A transfer adds its amount; resent five times it moves once; its txid is a number space
    of its own (an adjustment with the same number is unrelated)."""
    world = World()
    answers = [world.one(transfer("tx1", "25")) for _ in range(5)]
    assert {answer["code"] for answer in answers} == {"0"} and answers[0] == answers[4]
    assert world.wallet() == Decimal("125.00")
    assert world.one(adjust("tx1", "5"))["code"] == "0"
    assert world.wallet() == Decimal("120.00")


def test_cancel_of_a_record_deleted_over_tcp() -> None:
    """If a CRM deleted the adjustment's record meanwhile, the cancel answers 0, moves nothing
    more, and marks the adjustment cancelled."""
    world = World()
    world.one(adjust("a", "10"))
    tx = Transaction(world.state)
    record = tx.record(1)
    assert record is not None
    tx.put_record(record._replace(version=2, state=6))
    tx.put_account(world.state.accounts[LOGIN].with_money(Decimal(0), Decimal("100.00")))
    world.state.apply(tx)
    assert world.one(cancel("c", "a"))["code"] == "0"
    assert world.wallet() == Decimal("100.00")
    assert world.state.journal[(1, REQUESTS, "a")].cancelled_by == "c"
