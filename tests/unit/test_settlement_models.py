"""Settlement request models and header checks (docs/settlement.md): bounds, aliases, amounts,
and the timestamp skew on an injected clock."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from manager_gateway.settlement.codes import Code, Refusal
from manager_gateway.settlement.models import (
    AdjustmentBody,
    AmountQueryBody,
    CancelBody,
    TransferBody,
)
from manager_gateway.settlement.service import ServiceConfig, SettlementService
from tests.fakes import FakeClock

NOW_MS = 1_800_000_000_000

ADJUSTMENT: dict[str, Any] = {
    "thirdServerCode": "1001",
    "userName": "u-1",
    "currency": "USD",
    "bizType": 1,
    "operationType": "OPEN_POSITION",
    "amount": "12.50",
    "amountDigits": 2,
    "orderId": 99,
    "requestUniqueNo": "r-1",
    "requestTime": NOW_MS,
    "ip": "203.0.113.7",
}
CANCEL: dict[str, Any] = {
    **{k: v for k, v in ADJUSTMENT.items() if k not in ("operationType", "orderId")},
    "requestUniqueNo": "c-1",
    "reverseRequestUniqueNo": "r-1",
    "cancelRemark": "timeout",
}
TRANSFER: dict[str, Any] = {
    "username": "1001",
    "currency": "USD",
    "amount": "5",
    "amountDigist": 2,
    "txid": "tx-1",
    "requesttime": NOW_MS,
    "ip": "203.0.113.7",
    "remark": "win",
}


def parse(model: type[Any], body: dict[str, Any]) -> Any:
    return model.model_validate_json(orjson.dumps(body))


def refused(model: type[Any], body: dict[str, Any]) -> str:
    """The field the validation error names (its location, or a whole-body check's message,
    which starts with the field)."""
    with pytest.raises(ValidationError) as raised:
        parse(model, body)
    error = raised.value.errors()[0]
    return ".".join(str(part) for part in error["loc"]) or error["msg"]


def test_valid_bodies_parse() -> None:
    """The documented bodies parse, with amounts as exact decimals."""
    adjustment = parse(AdjustmentBody, ADJUSTMENT)
    assert (adjustment.amount, adjustment.amount_digits) == (Decimal("12.50"), 2)
    assert parse(CancelBody, CANCEL).reverse_request_unique_no == "r-1"
    transfer = parse(TransferBody, TRANSFER)
    assert (transfer.username, transfer.amount_digits) == ("1001", 2)
    query = parse(AmountQueryBody, {"thirdServerCode": "1", "currency": "USD"})
    assert query.user_name == ""


def test_aliases_the_platform_uses() -> None:
    """amountDigist (sic), username or thirdServerCode, requesttime or requestTime, and the
    snake_case field names are all read."""
    legacy = {k: v for k, v in TRANSFER.items() if k != "username"}
    transfer = parse(TransferBody, {**legacy, "thirdServerCode": "77"})
    assert transfer.username == "77"
    renamed = {k: v for k, v in ADJUSTMENT.items() if k not in ("amountDigits", "requestTime")}
    adjustment = parse(AdjustmentBody, {**renamed, "amountDigist": 2, "requesttime": NOW_MS})
    assert (adjustment.amount_digits, adjustment.request_time) == (2, NOW_MS)
    snake = {
        "third_server_code": "1001",
        "user_name": "u",
        "currency": "USD",
        "biz_type": 2,
        "operation_type": "NORMAL_CLOSE",
        "amount": "1",
        "amount_digits": 0,
        "order_id": 1,
        "request_unique_no": "s",
        "request_time": NOW_MS,
        "ip": "x",
    }
    assert parse(AdjustmentBody, snake).operation_type == "NORMAL_CLOSE"


@pytest.mark.parametrize(
    ("amount", "digits", "expected"),
    [
        ("12.5", 2, Decimal("12.5")),
        ("12.50", 2, Decimal("12.50")),
        ("12.500", 2, Decimal("12.500")),  # trailing zeros aside
        ("7", 0, Decimal("7")),
        ("0.00000001", 8, Decimal("0.00000001")),
        (12.25, 2, Decimal("12.25")),  # a JSON number, read by its shortest form
        (0.1, 1, Decimal("0.1")),  # not 0.1000000000000000055511151231257827
        ("1000000000", 0, Decimal("1000000000")),
    ],
)
def test_amounts_are_exact(amount: object, digits: int, expected: Decimal) -> None:
    """Amounts are read exactly, never through a binary float's noise."""
    body = {**ADJUSTMENT, "amount": amount, "amountDigits": digits}
    parsed = parse(AdjustmentBody, body)
    assert parsed.amount == expected and parsed.amount.as_tuple() == expected.as_tuple()


@pytest.mark.parametrize(
    ("amount", "digits"),
    [
        ("12.505", 2),
        ("0.1", 0),
        ("0", 2),
        ("-0.00", 2),
        ("1000000000.01", 2),
        ("abc", 2),
        ("NaN", 2),
        ("Infinity", 2),
        ("1e400", 2),
        (True, 2),
        (None, 2),
        ([1], 2),
        ("12.5", 9),
        ("12.5", -1),
    ],
)
def test_bad_amounts_are_refused(amount: object, digits: int) -> None:
    """Too many decimals for amountDigits, zero, out of range, not a number: refused."""
    field = refused(AdjustmentBody, {**ADJUSTMENT, "amount": amount, "amountDigits": digits})
    assert "amount" in field


@pytest.mark.parametrize(
    ("operation", "amount", "ok"),
    [
        ("OPEN_POSITION", "5", True),
        ("OPEN_POSITION", "-5", False),
        ("NORMAL_CLOSE", "5", True),
        ("NORMAL_CLOSE", "-5", False),
        ("ABNORMAL_OVERTRADING", "-5", True),
        ("ABNORMAL_OVERTRADING", "5", False),
        ("SOMETHING_ELSE", "5", False),
    ],
)
def test_sign_follows_the_operation_type(operation: str, amount: str, ok: bool) -> None:
    """Open and close amounts are positive, overtrading negative, other types refused."""
    body = {**ADJUSTMENT, "operationType": operation, "amount": amount}
    if ok:
        assert parse(AdjustmentBody, body).operation_type == operation
    else:
        refused(AdjustmentBody, body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("userName", "u" * 49),
        ("currency", "C" * 17),
        ("requestUniqueNo", "r" * 49),
        ("requestUniqueNo", ""),
        ("metadata", "m" * 201),
        ("ip", "i" * 65),
        ("thirdServerCode", ""),
        ("requestTime", 999_999_999_999),
        ("requestTime", 10_000_000_000_000),
        ("orderId", 2**63),
        ("bizType", "1"),  # strict: a JSON string is not an integer
        ("bizType", 1.5),
        ("thirdServerCode", 1001),
        ("amountDigits", "2"),
    ],
)
def test_field_bounds_and_types(field: str, value: object) -> None:
    """Each field's length, range and type is enforced, and the error names the field."""
    assert refused(AdjustmentBody, {**ADJUSTMENT, field: value}) in (field, "amountDigits")


@pytest.mark.parametrize("field", sorted(set(ADJUSTMENT) - {"amount"}))
def test_required_adjustment_fields(field: str) -> None:
    """Every documented adjustment field is required (metadata alone is optional)."""
    body = {k: v for k, v in ADJUSTMENT.items() if k != field}
    assert refused(AdjustmentBody, body) == field or field == "amountDigits"


def test_cancel_and_transfer_bounds() -> None:
    """A cancel needs reverseRequestUniqueNo and cancelRemark (<= 200) and a positive amount;
    orderId is optional; a transfer's amount is positive and its txid at most 48 characters."""
    assert parse(CancelBody, CANCEL).order_id is None
    assert refused(CancelBody, {**CANCEL, "cancelRemark": "x" * 201}) == "cancelRemark"
    assert refused(CancelBody, {k: v for k, v in CANCEL.items() if k != "reverseRequestUniqueNo"})
    refused(CancelBody, {**CANCEL, "amount": "-1"})
    refused(TransferBody, {**TRANSFER, "amount": "-1"})
    assert refused(TransferBody, {**TRANSFER, "txid": "t" * 49}) == "txid"


# -- headers and skew ------------------------------------------------------------------------


def service(clock: FakeClock, **config: Any) -> SettlementService:
    settings = ServiceConfig(
        config.get("company_ids", frozenset()),
        config.get("token"),
        config.get("max_skew_s", 300.0),
        2.5,
    )
    return SettlementService(settings, None, None, clock, None, lambda: False)  # type: ignore[arg-type]


class Headers(dict[str, str]):
    """Case-insensitive, as aiohttp's request headers are."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


def headers(**values: str) -> Headers:
    return Headers({"trace": "t", "companyid": "1", **{k.lower(): v for k, v in values.items()}})


@pytest.mark.parametrize(
    ("offset_ms", "expired"),
    [(0, False), (300_000, False), (-300_000, False), (300_001, True), (-300_001, True)],
)
def test_timestamp_skew(offset_ms: int, expired: bool) -> None:
    """A timestamp more than settlement_max_skew_s from the gateway's clock, either way, is
    REQUEST_EXPIRED; at the bound it is accepted."""
    clock = FakeClock(wall=NOW_MS / 1000)
    checks = service(clock)
    stamp = headers(timestamp=str(NOW_MS + offset_ms))
    if expired:
        with pytest.raises(Refusal) as raised:
            checks._headers(stamp, timestamp_required=True)
        assert raised.value.code is Code.REQUEST_EXPIRED
    else:
        assert checks._headers(stamp, timestamp_required=True).company == 1


def test_skew_follows_the_clock() -> None:
    """The same timestamp expires once the clock has moved past the skew."""
    clock = FakeClock(wall=NOW_MS / 1000)
    checks = service(clock, max_skew_s=10.0)
    stamp = headers(timestamp=str(NOW_MS))
    checks._headers(stamp, timestamp_required=True)
    clock.advance(10.5)
    with pytest.raises(Refusal):
        checks._headers(stamp, timestamp_required=True)


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ({"trace": ""}, Code.INVALID_PARAMETER),
        ({"companyid": ""}, Code.INVALID_PARAMETER),
        ({"companyid": "x1"}, Code.INVALID_PARAMETER),
        ({"companyid": "9" * 20}, Code.INVALID_PARAMETER),
        ({"companyid": "3"}, Code.FORBIDDEN),
        ({"timestamp": "soon"}, Code.INVALID_PARAMETER),
        ({"authorization": "Bearer wrong"}, Code.FORBIDDEN),
    ],
)
def test_header_refusals(given: dict[str, str], code: Code) -> None:
    """Missing or malformed headers, a company not allowed, a wrong bearer token."""
    clock = FakeClock(wall=NOW_MS / 1000)
    checks = service(clock, company_ids=frozenset({1, 2}), token="tok")
    base = {**headers(), "authorization": "Bearer tok", "timestamp": str(NOW_MS)}
    with pytest.raises(Refusal) as raised:
        checks._headers(Headers({**base, **given}), timestamp_required=True)
    assert raised.value.code is code


def test_a_cancel_cannot_reverse_itself() -> None:
    """A cancel whose reverseRequestUniqueNo is its own number is refused."""
    field = refused(CancelBody, {**CANCEL, "reverseRequestUniqueNo": CANCEL["requestUniqueNo"]})
    assert "reverseRequestUniqueNo" in field


@pytest.mark.parametrize("amount", [0.30000000000000004, 999999999.1234568])
def test_json_numbers_past_fifteen_digits_are_refused(amount: float) -> None:
    """A JSON number a double cannot hold exactly is refused, asking for a string."""
    with pytest.raises(ValidationError, match="send a string"):
        parse(AdjustmentBody, {**ADJUSTMENT, "amount": amount, "amountDigits": 8})
