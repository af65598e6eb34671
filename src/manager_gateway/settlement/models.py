"""The platform's request bodies and the answer envelope, as pydantic models.

The same models validate every request and generate the OpenAPI document the listener serves.
Field names are the platform's (camelCase); the spellings its documents also use are accepted as
aliases (`amountDigist`, `username`, `requesttime`). Unknown fields are ignored. A wrong type, a
missing field, a string too long or a number out of range is `INVALID_PARAMETER`, naming the field.

Amounts are decimal strings (a JSON number is read by its shortest round-trip decimal form, so it
is exact up to 15 significant digits) and never become binary floats.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .rules import ABNORMAL_OVERTRADING, NORMAL_CLOSE, OPEN_POSITION

#: Largest absolute amount of one request.
MAX_AMOUNT = Decimal(1_000_000_000)
#: 13-digit unix milliseconds.
MIN_MS, MAX_MS = 10**12, 10**13 - 1
INT64_MAX = 2**63 - 1


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError('must be a decimal string such as "12.50"')
    if isinstance(value, float) and len(Decimal(repr(value)).normalize().as_tuple().digits) > 15:
        # A double holds 15 significant digits reliably: more cannot be read exactly.
        raise ValueError("has more than 15 significant digits as a JSON number; send a string")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError('must be a decimal string such as "12.50"') from None
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    # copy_abs and compare never round, so an exponent of a million cannot overflow here.
    if amount.copy_abs() > MAX_AMOUNT:
        raise ValueError(f"must be at most {MAX_AMOUNT} in absolute value")
    if amount == 0:
        raise ValueError("must not be zero")
    return amount


def decimal_places(amount: Decimal) -> int:
    """Decimals an amount needs, trailing zeros aside; exact for any exponent (normalize()
    would round `1e-999999999999` to zero under the default context)."""
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # a finite amount: checked before
    if exponent >= 0:
        return 0
    significant = len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exponent - (len(digits) - significant))


Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal),
    Field(json_schema_extra={"type": "string", "example": "12.50"}),
]
Number48 = Annotated[str, Field(min_length=1, max_length=48)]
Millis = Annotated[int, Field(ge=MIN_MS, le=MAX_MS, description="13-digit unix milliseconds")]
Digits = Annotated[int, Field(ge=0, le=8)]


class PlatformRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore", strict=True, populate_by_name=True, str_strip_whitespace=False
    )


class _WithAmount(PlatformRequest):
    amount: Amount
    amount_digits: Digits = Field(validation_alias=AliasChoices("amountDigits", "amountDigist"))

    @model_validator(mode="after")
    def _digits_fit(self) -> Any:
        if decimal_places(self.amount) > self.amount_digits:
            raise ValueError(f"amount has more decimals than amountDigits ({self.amount_digits})")
        return self


class AdjustmentBody(_WithAmount):
    """External system (credit limit) adjustment: move money for an order event."""

    third_server_code: str = Field(alias="thirdServerCode", min_length=1, max_length=64)
    user_name: str = Field(alias="userName", max_length=48)
    currency: str = Field(min_length=1, max_length=16)
    biz_type: int = Field(alias="bizType", description="1, 2, 10, 11, 12 documented; others kept")
    operation_type: str = Field(
        alias="operationType", min_length=1, max_length=32,
        json_schema_extra={"enum": [OPEN_POSITION, NORMAL_CLOSE, ABNORMAL_OVERTRADING]},
    )  # fmt: skip
    order_id: int = Field(alias="orderId", ge=-INT64_MAX, le=INT64_MAX)
    request_unique_no: Number48 = Field(alias="requestUniqueNo")
    request_time: Millis = Field(validation_alias=AliasChoices("requestTime", "requesttime"))
    ip: str = Field(max_length=64)
    metadata: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _sign_fits(self) -> Any:
        if self.operation_type not in (OPEN_POSITION, NORMAL_CLOSE, ABNORMAL_OVERTRADING):
            raise ValueError(
                f"operationType must be one of {OPEN_POSITION}, {NORMAL_CLOSE}, "
                f"{ABNORMAL_OVERTRADING}"
            )
        negative = self.operation_type == ABNORMAL_OVERTRADING
        if (self.amount < 0) != negative:
            raise ValueError(
                f"amount must be {'negative' if negative else 'positive'} for {self.operation_type}"
            )
        return self


class CancelBody(_WithAmount):
    """Cancel external system (credit limit) adjustment: reverse one by its number."""

    third_server_code: str = Field(alias="thirdServerCode", min_length=1, max_length=64)
    user_name: str = Field(alias="userName", max_length=48)
    currency: str = Field(min_length=1, max_length=16)
    biz_type: int = Field(alias="bizType")
    order_id: int | None = Field(default=None, alias="orderId", ge=-INT64_MAX, le=INT64_MAX)
    request_unique_no: Number48 = Field(alias="requestUniqueNo")
    reverse_request_unique_no: Number48 = Field(alias="reverseRequestUniqueNo")
    request_time: Millis = Field(validation_alias=AliasChoices("requestTime", "requesttime"))
    ip: str = Field(max_length=64)
    cancel_remark: str = Field(alias="cancelRemark", max_length=200)
    metadata: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _positive(self) -> Any:
        if self.amount < 0:
            raise ValueError("amount must be positive")
        if self.reverse_request_unique_no == self.request_unique_no:
            raise ValueError("reverseRequestUniqueNo must differ from the cancel's requestUniqueNo")
        return self


class TransferBody(_WithAmount):
    """Transfer to CP when closing a position (legacy): credit a net win, once per txid."""

    username: str = Field(
        validation_alias=AliasChoices("username", "thirdServerCode"), min_length=1, max_length=64
    )
    currency: str = Field(min_length=1, max_length=16)
    txid: Number48
    request_time: Millis | None = Field(
        default=None, validation_alias=AliasChoices("requesttime", "requestTime")
    )
    ip: str | None = Field(default=None, max_length=64)
    remark: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _positive(self) -> Any:
        if self.amount < 0:
            raise ValueError("amount must be positive")
        return self


class AmountQueryBody(PlatformRequest):
    """Query the user's amount: the wallet as it stands."""

    third_server_code: str = Field(alias="thirdServerCode", min_length=1, max_length=64)
    user_name: str = Field(default="", alias="userName", max_length=48)
    currency: str = Field(min_length=1, max_length=16)


class Answer(BaseModel):
    """The platform's envelope: `code` "0" is success; anything else and the platform cancels."""

    code: str = Field(examples=["0", "INSUFFICIENT_FUNDS", "US_0000002"])
    msg: str
    msgParams: str = ""
    tm: int = Field(description="handling time, ms")
    trace: str = Field(description="the request's trace header, echoed")
    bizCode: str = "settlement"
    data: dict[str, Any]
    ok: bool
    fail: bool
