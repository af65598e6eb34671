"""Pydantic models of each command's `data`, and the one function that validates against them.

Models are strict (no string-to-int coercion, no bools as numbers) and ignore unknown fields, so
a client that sends extra keys such as the old docs' `__access` keeps working. Validators are built
once, with the classes, at import.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    model_validator,
)

from .errors import InvalidData
from .money import parse_amount

MAX_INT64 = 2**63 - 1
#: Largest accepted unix timestamp in seconds (year 36812): keeps arithmetic well inside int64.
MAX_UNIX_S = 2**40
#: Most logins one `GetUserBalanceList` may ask for, and most rows one filter may return.
MAX_LIST = 50_000
#: Most channels one `Subscribe` may name.
MAX_CHANNELS = 1_000


def _amount(value: object) -> Decimal:
    try:
        return parse_amount(value)
    except InvalidData as exc:
        raise ValueError(exc.message.removeprefix("amount ")) from exc


Amount = Annotated[Decimal, PlainValidator(_amount), PlainSerializer(str, return_type=str)]
Login = Annotated[int, Field(strict=True, ge=1, le=MAX_INT64)]
Order = Annotated[int, Field(strict=True, ge=1, le=MAX_INT64)]
UnixTime = Annotated[int, Field(strict=True, ge=0, le=MAX_UNIX_S)]
Comment = Annotated[str, StringConstraints(max_length=255)]


class CommandData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class FinanceData(CommandData):
    """`BalanceIn`, `BalanceOut`, `CreditIn`, `CreditOut` and their Sync forms."""

    login: Login
    amount: Amount
    comment: Comment | None = None
    order: Order | None = None
    open_time: UnixTime | None = None
    close_time: UnixTime | None = None


class _Incoming(FinanceData):
    @model_validator(mode="after")
    def _positive(self) -> _Incoming:
        if self.amount <= 0:
            raise ValueError("amount must be greater than 0")
        return self


class _Outgoing(FinanceData):
    @model_validator(mode="after")
    def _negative(self) -> _Outgoing:
        if self.amount >= 0:
            raise ValueError("amount must be less than 0")
        return self


def _require_comment(data: FinanceData) -> None:
    if not data.comment:
        raise ValueError("comment is required")


class BalanceInData(_Incoming):
    pass


class BalanceOutData(_Outgoing):
    pass


class CreditInData(_Incoming):
    @model_validator(mode="after")
    def _comment(self) -> CreditInData:
        _require_comment(self)
        return self


class CreditOutData(_Outgoing):
    @model_validator(mode="after")
    def _comment(self) -> CreditOutData:
        _require_comment(self)
        return self


class OrderData(CommandData):
    """`DeleteBalance`, `DeleteCredit` (and Sync), `GetTradeByOrder`."""

    order: Order


class LoginData(CommandData):
    login: Login


class LoginsData(CommandData):
    logins: Annotated[list[Login], Field(max_length=MAX_LIST)]


class AddUserData(CommandData):
    group: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    password: Annotated[str, StringConstraints(min_length=6, max_length=64)]
    leverage: Annotated[int, Field(strict=True, ge=1, le=10_000)]
    enable: Annotated[int, Field(strict=True, ge=0, le=1)]
    email: Annotated[
        str, StringConstraints(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    ]
    login: Login | None = None


class TradesFilterData(CommandData):
    login: Login | None = None
    cmd: Annotated[int, Field(strict=True, ge=-1, le=64)] | None = None
    from_: Annotated[UnixTime | None, Field(alias="from")] = None
    to: UnixTime | None = None
    limit: Annotated[int, Field(strict=True, ge=1, le=MAX_LIST)] = 1000
    offset: Annotated[int, Field(strict=True, ge=0, le=MAX_INT64)] = 0


class ChannelsData(CommandData):
    chanels: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
        Field(max_length=MAX_CHANNELS),
    ]


class EmptyData(CommandData):
    pass


M = TypeVar("M", bound=CommandData)


def _describe(error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"] if part != "from_")
    if error["type"] == "missing":
        return f"{loc} is required"
    msg = str(error["msg"]).removeprefix("Value error, ")
    # Cross-field checks carry no location; their message names the field already.
    return f"{loc}: {msg}" if loc else msg


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate a request's `data`; a failure is `InvalidData` naming the first bad field."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidData(_describe(exc.errors(include_url=False)[0])) from exc
