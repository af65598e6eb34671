"""Command data models (docs/protocol.md sections 2, 4, 5): strict types, ranges, named errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from manager_gateway.protocol.errors import InvalidData
from manager_gateway.protocol.models import (
    AddUserData,
    BalanceInData,
    BalanceOutData,
    ChannelsData,
    CommandData,
    CreditInData,
    CreditOutData,
    EmptyData,
    LoginData,
    LoginsData,
    OrderData,
    TradesFilterData,
    validate,
)

from ..conftest import DEMO_USER

MAX_INT64 = 2**63 - 1
MAX_UNIX_S = 2**40
MISSING = object()  # marks a field to remove from the valid base data

INCOMING = [BalanceInData, CreditInData]
OUTGOING = [BalanceOutData, CreditOutData]
FINANCE = INCOMING + OUTGOING

USER = DEMO_USER


def finance_base(model: type[CommandData]) -> dict[str, Any]:
    """Valid data for a finance model: positive amount for *In, negative for *Out."""
    amount = 300.0 if model in INCOMING else -300.0
    return {"login": 1001, "amount": amount, "comment": "Promotion credit"}


def with_field(base: dict[str, Any], field: str, value: object) -> dict[str, Any]:
    data = dict(base)
    if value is MISSING:
        data.pop(field, None)
    else:
        data[field] = value
    return data


def invalid(model: type[CommandData], data: dict[str, Any]) -> str:
    """Validate expecting InvalidData (400 INVALID_DATA); return its message."""
    with pytest.raises(InvalidData) as info:
        validate(model, data)
    assert (info.value.status, info.value.code) == (400, "INVALID_DATA")
    return info.value.message


def names_field(message: str, field: str) -> bool:
    """True when `message` starts by naming `field` (e.g. `login: ...`, `comment is required`)."""
    return message.startswith((f"{field}:", f"{field} ", f"{field}."))


def check(model: type[CommandData], data: dict[str, Any], field: str) -> None:
    message = invalid(model, data)
    assert names_field(message, field), message


# ---------------------------------------------------------------- finance models

INT_FIELD_BAD = [
    pytest.param("1001", id="str"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(1001.0, id="float-whole"),
    pytest.param(1001.5, id="float"),
    pytest.param([1001], id="list"),
    pytest.param({"v": 1001}, id="dict"),
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param(MAX_INT64 + 1, id="int64-overflow"),
    pytest.param(10**30, id="huge"),
]

FINANCE_FIELD_CASES = [
    *[pytest.param("login", p.values[0], id=f"login-{p.id}") for p in INT_FIELD_BAD],
    pytest.param("login", MISSING, id="login-missing"),
    pytest.param("login", None, id="login-null"),
    pytest.param("amount", MISSING, id="amount-missing"),
    pytest.param("amount", None, id="amount-null"),
    pytest.param("amount", "300", id="amount-str"),
    pytest.param("amount", "", id="amount-empty-str"),
    pytest.param("amount", True, id="amount-true"),
    pytest.param("amount", [300], id="amount-list"),
    pytest.param("amount", float("nan"), id="amount-nan"),
    pytest.param("amount", float("inf"), id="amount-inf"),
    pytest.param("amount", 1e308, id="amount-1e308"),
    pytest.param("amount", 10**30, id="amount-huge-int"),
    pytest.param("comment", 5, id="comment-int"),
    pytest.param("comment", ["x"], id="comment-list"),
    pytest.param("comment", "x" * 256, id="comment-256"),
    pytest.param("comment", "x" * 1_000_000, id="comment-huge"),
    *[pytest.param("order", p.values[0], id=f"order-{p.id}") for p in INT_FIELD_BAD],
    pytest.param("open_time", -1, id="open_time-negative"),
    pytest.param("open_time", MAX_UNIX_S + 1, id="open_time-over"),
    pytest.param("open_time", 10**30, id="open_time-huge"),
    pytest.param("open_time", "1700000000", id="open_time-str"),
    pytest.param("open_time", True, id="open_time-true"),
    pytest.param("open_time", 1700000000.0, id="open_time-float"),
    pytest.param("close_time", -1, id="close_time-negative"),
    pytest.param("close_time", MAX_UNIX_S + 1, id="close_time-over"),
    pytest.param("close_time", "1700000000", id="close_time-str"),
    pytest.param("close_time", True, id="close_time-true"),
    pytest.param("close_time", 1700000000.0, id="close_time-float"),
]


@pytest.mark.parametrize("model", FINANCE, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("field", "value"), FINANCE_FIELD_CASES)
def test_finance_bad_field(model: type[CommandData], field: str, value: object) -> None:
    """A missing, mistyped or out-of-range finance field is InvalidData naming that field."""
    data = with_field(finance_base(model), field, value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if field == "amount" and model in OUTGOING and is_number:
        data["amount"] = -value  # out of range on the negative side, not merely the wrong sign
    check(model, data, field)


@pytest.mark.parametrize("model", FINANCE, ids=lambda m: m.__name__)
def test_finance_valid(model: type[CommandData]) -> None:
    """Valid finance data validates to exact values, optional fields defaulting to None."""
    result = validate(model, finance_base(model))
    assert isinstance(result, model)
    sign = 1 if model in INCOMING else -1
    assert result.login == 1001  # type: ignore[attr-defined]
    assert result.amount == Decimal(300 * sign)  # type: ignore[attr-defined]
    assert str(result.amount) == str(300 * sign)  # type: ignore[attr-defined]
    assert result.comment == "Promotion credit"  # type: ignore[attr-defined]
    assert result.order is None  # type: ignore[attr-defined]
    assert result.open_time is None  # type: ignore[attr-defined]
    assert result.close_time is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", FINANCE, ids=lambda m: m.__name__)
def test_finance_boundaries_accepted(model: type[CommandData]) -> None:
    """Largest login/order, 255-char comment, time bounds and |amount| of 1e9 are accepted."""
    sign = 1 if model in INCOMING else -1
    data = {
        "login": MAX_INT64,
        "amount": sign * 1e9,
        "comment": "c" * 255,
        "order": MAX_INT64,
        "open_time": 0,
        "close_time": MAX_UNIX_S,
    }
    result = validate(model, data)
    assert result.login == MAX_INT64  # type: ignore[attr-defined]
    assert result.amount == Decimal(sign * 1_000_000_000)  # type: ignore[attr-defined]
    assert result.comment == "c" * 255  # type: ignore[attr-defined]
    assert result.order == MAX_INT64  # type: ignore[attr-defined]
    assert (result.open_time, result.close_time) == (0, MAX_UNIX_S)  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", FINANCE, ids=lambda m: m.__name__)
def test_finance_null_optionals_accepted(model: type[CommandData]) -> None:
    """Explicit nulls for order, open_time and close_time mean "not given"."""
    data = {**finance_base(model), "order": None, "open_time": None, "close_time": None}
    result: Any = validate(model, data)
    assert (result.order, result.open_time, result.close_time) == (None, None, None)


def test_finance_amount_is_exact_decimal() -> None:
    """Binary float noise in amount is read as the intended decimal."""
    result = validate(BalanceInData, {"login": 1, "amount": 0.30000000000000004})
    assert str(result.amount) == "0.3"


@pytest.mark.parametrize("model", INCOMING, ids=lambda m: m.__name__)
@pytest.mark.parametrize("amount", [0, 0.0, -0.0, -0.01, -300.0, -1e9], ids=str)
def test_incoming_amount_must_be_positive(model: type[CommandData], amount: float) -> None:
    """`*In` refuses zero and negative amounts, naming amount."""
    check(model, {**finance_base(model), "amount": amount}, "amount")


@pytest.mark.parametrize("model", OUTGOING, ids=lambda m: m.__name__)
@pytest.mark.parametrize("amount", [0, 0.0, -0.0, 0.01, 300.0, 1e9], ids=str)
def test_outgoing_amount_must_be_negative(model: type[CommandData], amount: float) -> None:
    """`*Out` refuses zero and positive amounts, naming amount."""
    check(model, {**finance_base(model), "amount": amount}, "amount")


@pytest.mark.parametrize("model", [CreditInData, CreditOutData], ids=lambda m: m.__name__)
@pytest.mark.parametrize("comment", [MISSING, None, ""], ids=["missing", "null", "empty"])
def test_credit_comment_is_required(model: type[CommandData], comment: object) -> None:
    """Credit commands refuse a missing, null or empty comment, naming comment."""
    check(model, with_field(finance_base(model), "comment", comment), "comment")


@pytest.mark.parametrize("model", [BalanceInData, BalanceOutData], ids=lambda m: m.__name__)
def test_balance_comment_defaults_to_none(model: type[CommandData]) -> None:
    """Balance commands accept a missing comment; the model leaves it None for the default."""
    data = with_field(finance_base(model), "comment", MISSING)
    assert validate(model, data).comment is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", FINANCE, ids=lambda m: m.__name__)
def test_finance_ignores_unknown_fields(model: type[CommandData]) -> None:
    """Unknown keys such as the old docs' `__access` are ignored, not refused."""
    base = finance_base(model)
    data = {**base, "__access": {"type": 3, "groups": ["*"]}, "symbol": "EURUSD", "cmd": 6}
    result = validate(model, data)
    assert result == validate(model, base)
    assert not hasattr(result, "__access")
    assert not hasattr(result, "symbol")


# ---------------------------------------------------------------- single-key models


@pytest.mark.parametrize("value", [p.values[0] for p in INT_FIELD_BAD] + [MISSING, None])
def test_order_data_bad_order(value: object) -> None:
    """OrderData refuses a missing, mistyped or out-of-range order, naming order."""
    check(OrderData, with_field({"order": 1}, "order", value), "order")


@pytest.mark.parametrize("order", [1, 42, MAX_INT64])
def test_order_data_valid(order: int) -> None:
    """OrderData accepts orders from 1 to the int64 maximum."""
    assert validate(OrderData, {"order": order}).order == order


@pytest.mark.parametrize("value", [p.values[0] for p in INT_FIELD_BAD] + [MISSING, None])
def test_login_data_bad_login(value: object) -> None:
    """LoginData refuses a missing, mistyped or out-of-range login, naming login."""
    check(LoginData, with_field({"login": 1}, "login", value), "login")


@pytest.mark.parametrize("login", [1, 1001, MAX_INT64])
def test_login_data_valid(login: int) -> None:
    """LoginData accepts logins from 1 to the int64 maximum."""
    assert validate(LoginData, {"login": login}).login == login


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(MISSING, id="missing"),
        pytest.param(None, id="null"),
        pytest.param(1001, id="int"),
        pytest.param("1001", id="str"),
        pytest.param({"a": 1001}, id="dict"),
        pytest.param([1, "2"], id="str-item"),
        pytest.param([1, True], id="bool-item"),
        pytest.param([1, 2.0], id="float-item"),
        pytest.param([0], id="zero-item"),
        pytest.param([-5], id="negative-item"),
        pytest.param([MAX_INT64 + 1], id="overflow-item"),
        pytest.param([None], id="null-item"),
        pytest.param([1] * 50_001, id="too-many"),
    ],
)
def test_logins_data_bad_logins(value: object) -> None:
    """LoginsData refuses a bad list or a bad item in it, naming logins."""
    check(LoginsData, with_field({"logins": [1]}, "logins", value), "logins")


@pytest.mark.parametrize("logins", [[], [1001], [1, 2, 3], [1] * 50_000], ids=len)
def test_logins_data_valid(logins: list[int]) -> None:
    """LoginsData accepts up to 50,000 logins, and an empty list."""
    assert validate(LoginsData, {"logins": logins}).logins == logins


# ---------------------------------------------------------------- AddUser

ADD_USER_CASES = [
    *[pytest.param(f, MISSING, id=f"{f}-missing") for f in USER],
    *[pytest.param(f, None, id=f"{f}-null") for f in USER],
    pytest.param("group", "", id="group-empty"),
    pytest.param("group", "g" * 65, id="group-65"),
    pytest.param("group", 5, id="group-int"),
    pytest.param("group", ["demo"], id="group-list"),
    pytest.param("name", "", id="name-empty"),
    pytest.param("name", "n" * 129, id="name-129"),
    pytest.param("name", "n" * 1_000_000, id="name-huge"),
    pytest.param("name", 5, id="name-int"),
    pytest.param("password", "", id="password-empty"),
    pytest.param("password", "12345", id="password-5"),
    pytest.param("password", "p" * 65, id="password-65"),
    pytest.param("password", 123456, id="password-int"),
    pytest.param("leverage", 0, id="leverage-0"),
    pytest.param("leverage", -1, id="leverage-negative"),
    pytest.param("leverage", 10_001, id="leverage-10001"),
    pytest.param("leverage", 10**30, id="leverage-huge"),
    pytest.param("leverage", "100", id="leverage-str"),
    pytest.param("leverage", 100.0, id="leverage-float"),
    pytest.param("leverage", True, id="leverage-true"),
    pytest.param("enable", 2, id="enable-2"),
    pytest.param("enable", -1, id="enable-negative"),
    pytest.param("enable", "1", id="enable-str"),
    pytest.param("enable", True, id="enable-true"),
    pytest.param("enable", False, id="enable-false"),
    pytest.param("enable", 1.0, id="enable-float"),
    pytest.param("email", "", id="email-empty"),
    pytest.param("email", "ab", id="email-short"),
    pytest.param("email", "no-at-sign", id="email-no-at"),
    pytest.param("email", "a b@example.com", id="email-space"),
    pytest.param("email", "a@b@c", id="email-two-ats"),
    pytest.param("email", "a@" + "e" * 253, id="email-255"),
    pytest.param("email", 5, id="email-int"),
    *[pytest.param("login", p.values[0], id=f"login-{p.id}") for p in INT_FIELD_BAD],
]


@pytest.mark.parametrize(("field", "value"), ADD_USER_CASES)
def test_add_user_bad_field(field: str, value: object) -> None:
    """A missing, mistyped or out-of-range AddUser field is InvalidData naming that field."""
    check(AddUserData, with_field(USER, field, value), field)


def test_add_user_valid_defaults() -> None:
    """Valid AddUser data validates exactly; login defaults to None (allocated)."""
    result = validate(AddUserData, USER)
    assert (result.group, result.name, result.password) == ("demo", "Test User", "secret123")
    assert (result.leverage, result.enable, result.email, result.login) == (
        100,
        1,
        "user@example.com",
        None,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "123456"),
        ("password", "p" * 64),
        ("leverage", 1),
        ("leverage", 10_000),
        ("enable", 0),
        ("enable", 1),
        ("email", "a@b"),
        ("group", "g" * 64),
        ("name", "n" * 128),
        ("login", 1),
        ("login", MAX_INT64),
        ("login", None),
    ],
)
def test_add_user_boundaries_accepted(field: str, value: object) -> None:
    """AddUser accepts the edges of each range (password 6..64, leverage 1..10000, ...)."""
    result = validate(AddUserData, {**USER, field: value})
    assert getattr(result, field) == value
    assert type(getattr(result, field)) is type(value)


def test_add_user_ignores_unknown_fields() -> None:
    """AddUser ignores keys it does not know, such as `__access`."""
    result = validate(AddUserData, {**USER, "__access": {"type": 3}, "currency": "EUR"})
    assert result == validate(AddUserData, USER)


# ---------------------------------------------------------------- MngGetTradesByFilter


def test_trades_filter_defaults() -> None:
    """An empty filter has no bounds, limit 1000 and offset 0."""
    result = validate(TradesFilterData, {})
    assert (result.login, result.cmd, result.from_, result.to) == (None, None, None, None)
    assert (result.limit, result.offset) == (1000, 0)


def test_trades_filter_from_alias() -> None:
    """The wire key `from` fills the `from_` field."""
    result = validate(TradesFilterData, {"from": 1700000000, "to": 1800000000})
    assert (result.from_, result.to) == (1700000000, 1800000000)


def test_trades_filter_python_name_is_not_a_wire_key() -> None:
    """`from_` on the wire is an unknown key, ignored rather than taken as `from`."""
    assert validate(TradesFilterData, {"from_": 5}).from_ is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("login", 0, id="login-0"),
        pytest.param("login", "1001", id="login-str"),
        pytest.param("login", True, id="login-true"),
        pytest.param("login", 1001.0, id="login-float"),
        pytest.param("cmd", -2, id="cmd--2"),
        pytest.param("cmd", 65, id="cmd-65"),
        pytest.param("cmd", 10**30, id="cmd-huge"),
        pytest.param("cmd", "6", id="cmd-str"),
        pytest.param("cmd", True, id="cmd-true"),
        pytest.param("cmd", 6.0, id="cmd-float"),
        pytest.param("from", -1, id="from-negative"),
        pytest.param("from", MAX_UNIX_S + 1, id="from-over"),
        pytest.param("from", "1700000000", id="from-str"),
        pytest.param("from", True, id="from-true"),
        pytest.param("from", 1.5, id="from-float"),
        pytest.param("to", -1, id="to-negative"),
        pytest.param("to", MAX_UNIX_S + 1, id="to-over"),
        pytest.param("to", "1700000000", id="to-str"),
        pytest.param("to", True, id="to-true"),
        pytest.param("limit", 0, id="limit-0"),
        pytest.param("limit", -1, id="limit-negative"),
        pytest.param("limit", 50_001, id="limit-50001"),
        pytest.param("limit", 10**30, id="limit-huge"),
        pytest.param("limit", "10", id="limit-str"),
        pytest.param("limit", True, id="limit-true"),
        pytest.param("limit", 10.0, id="limit-float"),
        pytest.param("limit", None, id="limit-null"),
        pytest.param("offset", -1, id="offset-negative"),
        pytest.param("offset", MAX_INT64 + 1, id="offset-overflow"),
        pytest.param("offset", "0", id="offset-str"),
        pytest.param("offset", True, id="offset-true"),
        pytest.param("offset", None, id="offset-null"),
    ],
)
def test_trades_filter_bad_field(field: str, value: object) -> None:
    """A mistyped or out-of-range filter field is InvalidData naming the wire field."""
    check(TradesFilterData, {field: value}, field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("login", MAX_INT64),
        ("cmd", -1),
        ("cmd", 0),
        ("cmd", 64),
        ("from", 0),
        ("from", MAX_UNIX_S),
        ("to", MAX_UNIX_S),
        ("limit", 1),
        ("limit", 50_000),
        ("offset", 0),
        ("offset", MAX_INT64),
    ],
)
def test_trades_filter_boundaries_accepted(field: str, value: int) -> None:
    """The edges of each filter range are accepted."""
    result = validate(TradesFilterData, {field: value})
    assert getattr(result, "from_" if field == "from" else field) == value


# ---------------------------------------------------------------- channels and empty data


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(MISSING, id="missing"),
        pytest.param(None, id="null"),
        pytest.param("EURUSD", id="str"),
        pytest.param({"EURUSD": True}, id="dict"),
        pytest.param([""], id="empty-item"),
        pytest.param(["x" * 65], id="long-item"),
        pytest.param([1], id="int-item"),
        pytest.param([None], id="null-item"),
        pytest.param(["a"] * 1001, id="too-many"),
    ],
)
def test_channels_bad(value: object) -> None:
    """ChannelsData refuses a bad `chanels` list or item, naming chanels."""
    check(ChannelsData, with_field({"chanels": ["EURUSD"]}, "chanels", value), "chanels")


def test_channels_double_n_spelling_is_not_the_key() -> None:
    """Only the official clients' `chanels` spelling is read; `channels` alone is missing it."""
    check(ChannelsData, {"channels": ["EURUSD"]}, "chanels")


@pytest.mark.parametrize(
    "chanels",
    [[], ["trade:event", "balance:event"], ["x" * 64], ["a"] * 1000],
    ids=["empty", "events", "64-chars", "1000"],
)
def test_channels_valid(chanels: list[str]) -> None:
    """ChannelsData accepts up to 1000 channel names of 1..64 characters."""
    assert validate(ChannelsData, {"chanels": chanels}).chanels == chanels


@pytest.mark.parametrize("data", [{}, {"x": 1, "__access": {"type": 3}}], ids=["empty", "extra"])
def test_empty_data_accepts_anything_object(data: dict[str, Any]) -> None:
    """EmptyData accepts `{}` and ignores any keys."""
    assert isinstance(validate(EmptyData, data), EmptyData)
