"""Answer checking rules: each passes a right answer and names the field of a wrong one."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_bench.checks import AnswerChecker, cents, mismatch_reason

CREDIT = {"login": 1001, "amount": 300.1, "comment": "Promotion credit"}
WITHDRAWAL = {"login": 1001, "amount": -20.25, "comment": "loadgen"}


def record(**changes: Any) -> dict[str, Any]:
    base = {
        "order": 7,
        "login": 1001,
        "cmd": 7,
        "state": 3,
        "symbol": "",
        "volume": 0,
        "profit": 300.1,
        "comment": "Promotion credit",
        "open_time": 1,
        "close_time": 1,
        "update_time": 1,
        "reason": 7,
    }
    return {**base, **changes}


def ack(**changes: Any) -> dict[str, Any]:
    base = {"accepted": True, "order": 7, "state": 10, "login": 1001, "cmd": 7, "amount": 300.1}
    return {**base, **changes}


def ok(data: Any, ext_id: str = "e1") -> dict[str, Any]:
    return {"extID": ext_id, "status": 200, "data": data}


def test_a_matching_sync_trade_record_passes() -> None:
    """CreditInSync answered with the matching trade record is no mismatch."""
    assert mismatch_reason("CreditInSync", "e1", CREDIT, ok(record())) is None


@pytest.mark.parametrize(
    ("command", "cmd"),
    [
        ("BalanceInSync", 6),
        ("CreditInSync", 7),
        ("BalanceOutSync", 8),
        ("CreditOutSync", 9),
    ],
)
def test_each_sync_command_expects_its_cmd_code(command: str, cmd: int) -> None:
    """Each *Sync command's record must carry its own cmd code (6, 7, 8, 9), no other."""
    data = {**CREDIT, "amount": -300.1 if "Out" in command else 300.1}
    good = record(cmd=cmd, profit=data["amount"])
    assert mismatch_reason(command, "e1", data, ok(good)) is None
    wrong = record(cmd=6 if cmd != 6 else 7, profit=data["amount"])
    assert mismatch_reason(command, "e1", data, ok(wrong)) == (
        f"cmd: got {wrong['cmd']}, expected {cmd}"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"login": 1002}, "login"),
        ({"login": "1001"}, "login"),
        ({"profit": 300.0}, "profit"),
        ({"profit": "300.10"}, "profit"),
        ({"comment": "other"}, "comment"),
        ({"order": 0}, "order"),
        ({"order": -3}, "order"),
        ({"order": True}, "order"),
        ({"order": None}, "order"),
    ],
)
def test_a_wrong_sync_trade_record_is_a_mismatch_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    """A record whose login, profit, comment or order does not fit is a mismatch on it."""
    reason = mismatch_reason("CreditInSync", "e1", CREDIT, ok(record(**changes)))
    assert reason is not None and reason.startswith(f"{field}:")


def test_profit_is_compared_in_cents_not_as_floats() -> None:
    """0.1 + 0.2 sent and 0.3 recorded are the same 30 cents; a cent apart is not."""
    data = {"login": 1001, "amount": 0.1 + 0.2, "comment": "c"}
    assert mismatch_reason("CreditInSync", "e1", data, ok(record(profit=0.3, comment="c"))) is None
    assert mismatch_reason("CreditInSync", "e1", data, ok(record(profit=0.31, comment="c")))
    whole = {"login": 1001, "amount": 300, "comment": "c"}
    whole_record = record(profit=300.0, comment="c")
    assert mismatch_reason("CreditInSync", "e1", whole, ok(whole_record)) is None
    assert (cents(-20.25), cents(5), cents(True), cents("1"), cents(None)) == (
        -2025,
        500,
        None,
        None,
        None,
    )


def test_balance_commands_default_the_comment_to_finance() -> None:
    """A Balance* request without a comment expects the record's comment "Finance"."""
    data = {"login": 1001, "amount": 50.0}
    good = record(cmd=6, profit=50.0, comment="Finance")
    assert mismatch_reason("BalanceInSync", "e1", data, ok(good)) is None
    assert mismatch_reason("BalanceInSync", "e1", data, ok({**good, "comment": ""}))


def test_sync_data_that_is_not_a_record_is_a_mismatch() -> None:
    """A 200 whose data is not an object cannot be the trade record."""
    assert mismatch_reason("CreditInSync", "e1", CREDIT, ok([1, 2])) == (
        "data: got list, not a trade record"
    )


def test_a_matching_async_ack_passes() -> None:
    """CreditIn answered with the matching ack is no mismatch; BalanceOut likewise."""
    assert mismatch_reason("CreditIn", "e1", CREDIT, ok(ack())) is None
    out = ack(cmd=8, amount=-20.25)
    assert mismatch_reason("BalanceOut", "e1", WITHDRAWAL, ok(out)) is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"accepted": False}, "accepted"),
        ({"accepted": 1}, "accepted"),
        ({"state": 11}, "state"),
        ({"state": 3}, "state"),
        ({"login": 1}, "login"),
        ({"cmd": 6}, "cmd"),
        ({"amount": 300.0}, "amount"),
        ({"order": 0}, "order"),
    ],
)
def test_a_wrong_async_ack_is_a_mismatch_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    """An ack not accepted, in another state, or for another login, cmd, amount or a
    non-positive order is a mismatch on that field."""
    reason = mismatch_reason("CreditIn", "e1", CREDIT, ok(ack(**changes)))
    assert reason is not None and reason.startswith(f"{field}:")


def test_an_update_may_answer_state_11() -> None:
    """A request naming an order may be acked as an update (state 11) of that order."""
    data = {**CREDIT, "order": 7}
    assert mismatch_reason("CreditIn", "e1", data, ok(ack(state=11))) is None
    assert mismatch_reason("CreditIn", "e1", data, ok(ack(state=11, order=8)))


def test_get_account_by_login_must_echo_the_login() -> None:
    """GetAccountByLogin passes with the login asked for and fails with another."""
    data = {"login": 1001}
    account = {"login": 1001, "balance": 0.0}
    assert mismatch_reason("GetAccountByLogin", "e1", data, ok(account)) is None
    assert mismatch_reason("GetAccountByLogin", "e1", data, ok({"login": 1002})) == (
        "login: got 1002, sent 1001"
    )
    assert mismatch_reason("GetAccountByLogin", "e1", data, ok("x"))


def test_get_trade_by_order_must_echo_the_order() -> None:
    """GetTradeByOrder passes with the order asked for and fails with another."""
    assert mismatch_reason("GetTradeByOrder", "e1", {"order": 7}, ok(record())) is None
    assert mismatch_reason("GetTradeByOrder", "e1", {"order": 8}, ok(record()))


def test_a_wrong_ext_id_is_a_mismatch_even_on_an_error() -> None:
    """An answer carrying another request's extID (or none) is a mismatch, whatever its
    status."""
    assert mismatch_reason("CreditInSync", "e1", CREDIT, ok(record(), ext_id="e2")) == (
        "extID: got 'e2', sent 'e1'"
    )
    error = {"extID": None, "status": 400, "error": "INVALID_JSON"}
    assert mismatch_reason("CreditInSync", "e1", CREDIT, error)


def test_an_error_answer_is_not_a_mismatch_and_other_commands_need_only_status() -> None:
    """A non-200 answer echoing the extID is judged an error, not a mismatch; HealthCheck and
    Unsubscribe need only their status; a missing status is a mismatch."""
    error = {"extID": "e1", "status": 504, "error": "SYNC_TIMEOUT", "data": {"order": 9}}
    assert mismatch_reason("CreditInSync", "e1", CREDIT, error) is None
    assert mismatch_reason("HealthCheck", "e1", {}, ok({"status": "ok"})) is None
    assert mismatch_reason("HealthCheck", "e1", {}, {"extID": "e1"}) == (
        "status: got None, not an int"
    )


def test_checker_counts_ok_errors_by_code_and_mismatches_by_field() -> None:
    """AnswerChecker tallies ok answers, errors as "status/code", client failures, mismatches
    by field and orphans, keeping a few examples."""
    checker = AnswerChecker(max_examples=2)
    assert checker.check("CreditInSync", "e1", CREDIT, ok(record())) is True
    for code in ("INTERNAL_ERROR", "INTERNAL_ERROR"):
        answer = {"extID": "e1", "status": 500, "error": code, "message": "x"}
        assert checker.check("CreditInSync", "e1", CREDIT, answer) is False
    assert checker.check("CreditInSync", "e1", CREDIT, {"extID": "e1", "status": 429}) is False
    assert checker.check("CreditInSync", "e1", CREDIT, ok(record(login=5))) is False
    checker.failure("client/TIMEOUT")
    checker.orphan({"extID": "stray", "status": 200})
    assert checker.ok == 1
    assert checker.errors == {"500/INTERNAL_ERROR": 2, "429/?": 1, "client/TIMEOUT": 1}
    assert checker.error_count == 4
    assert checker.mismatches == 2 and checker.mismatch_fields == {"login": 1, "extID": 1}
    assert [e["reason"].split(":")[0] for e in checker.examples] == ["login", "extID"]
    assert checker.examples[0]["data"] == CREDIT and checker.examples[0]["extID"] == "e1"
    checker.orphan({"extID": "another"})
    assert len(checker.examples) == 2 and checker.mismatches == 3
