"""From a platform request (headers and body bytes) to its answer envelope.

Checks that need no state happen here, before anything reaches the main loop: the headers
(`trace`, `companyId`, `timestamp` skew, bearer token, allowed companies) and the body's model.
What remains becomes a SETTLEMENT operation for the single writer, and the answer waits for its
decision at most `settlement_answer_budget_ms`: past that the platform is told
`SERVICE_UNAVAILABLE`, and the operation is still decided in order, where a cancel will find it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
import structlog
from pydantic import BaseModel, ValidationError

from ..clock import Clock
from ..protocol.errors import GatewayError, ShuttingDown
from ..runtime.mainloop import MainLoop
from ..runtime.operations import Operation, OpKind
from ..session.access import Access
from .codes import Code, Refusal
from .models import AdjustmentBody, AmountQueryBody, CancelBody, TransferBody
from .rules import Rules, SettlementRequest, answer, wallet_text

log = structlog.get_logger("manager_gateway.settlement")

BIZ_CODE = "settlement"
ModelT = TypeVar("ModelT", bound=BaseModel)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The settings the service applies to each request."""

    company_ids: frozenset[int]  # empty: any company
    token: str | None  # required `Authorization: Bearer` value, if set
    max_skew_s: float
    answer_budget_s: float


@dataclass(slots=True)
class Headers:
    trace: str
    company: int


class SettlementService:
    def __init__(
        self,
        config: ServiceConfig,
        runtime: MainLoop,
        rules: Rules,
        clock: Clock,
        access: Access,
        draining: Callable[[], bool],
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.rules = rules
        self.clock = clock
        self._access = access  # every Operation names one; `Rules` checks the same masks itself
        self._draining = draining
        self.past_budget = 0  # answers sent as SERVICE_UNAVAILABLE because the budget ran out

    # -- the routes ----------------------------------------------------------------------------

    async def adjust(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        return await self._handle(headers, body, AdjustmentBody, timestamp_required=True)

    async def cancel(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        return await self._handle(headers, body, CancelBody, timestamp_required=False)

    async def transfer(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        return await self._handle(headers, body, TransferBody, timestamp_required=False)

    async def amount(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        started = time.perf_counter()
        trace = headers.get("trace", "")
        try:
            self._headers(headers, timestamp_required=False)
            query = _validate(AmountQueryBody, body)
            account = self.rules.checked_account(
                self.runtime.account, query.third_server_code, query.currency
            )
        except Refusal as refusal:
            return envelope(answer(refusal.code, refusal.msg), trace, started)
        data = {
            "userName": query.user_name,
            "currency": account.currency,
            "amount": wallet_text(self.rules.wallet(account), account.digits),
            "amountDigits": account.digits,
        }
        return envelope(answer(Code.OK, "success", data), trace, started)

    # -- one request ---------------------------------------------------------------------------

    async def _handle(
        self,
        headers: Mapping[str, str],
        body: bytes,
        model: type[AdjustmentBody | CancelBody | TransferBody],
        timestamp_required: bool,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        trace = headers.get("trace", "")
        try:
            checked = self._headers(headers, timestamp_required)
            request = self._request(checked.company, _validate(model, body))
            if self._draining():
                raise Refusal(Code.SERVICE_UNAVAILABLE, "the gateway is shutting down")
            outcome = await self._decide(request)
        except Refusal as refusal:
            outcome = answer(refusal.code, refusal.msg)
        return envelope(outcome, trace, started)

    def _headers(self, headers: Mapping[str, str], timestamp_required: bool) -> Headers:
        config = self.config
        if config.token is not None:
            presented = headers.get("authorization", "")
            expected = f"Bearer {config.token}"
            if not hmac.compare_digest(presented.encode(), expected.encode()):
                raise Refusal(Code.FORBIDDEN, "missing or wrong bearer token")
        trace = headers.get("trace")
        if not trace:
            raise Refusal(Code.INVALID_PARAMETER, "header trace is required")
        company = _header_int(headers, "companyId", required=True)
        assert company is not None
        if config.company_ids and company not in config.company_ids:
            raise Refusal(Code.FORBIDDEN, f"companyId {company} is not accepted")
        timestamp = _header_int(headers, "timestamp", required=timestamp_required)
        if timestamp is not None:
            skew_s = abs(timestamp / 1000 - self.clock.wall())
            if skew_s > config.max_skew_s:
                raise Refusal(
                    Code.REQUEST_EXPIRED,
                    f"timestamp is {skew_s:.0f} s away from the gateway's clock "
                    f"(at most {config.max_skew_s:.0f} s)",
                )
        return Headers(trace, company)

    def _request(
        self, company: int, body: AdjustmentBody | CancelBody | TransferBody
    ) -> SettlementRequest:
        if isinstance(body, TransferBody):
            return SettlementRequest(
                "transfer", company, body.txid,
                self._fingerprint("transfer", body.username, body.currency, body.amount),
                body.username, body.username, body.currency, body.amount,
            )  # fmt: skip
        if isinstance(body, CancelBody):
            fingerprint = self._fingerprint(
                "cancel", body.third_server_code, body.currency, body.amount,
                body.reverse_request_unique_no, body.biz_type, body.order_id,
            )  # fmt: skip
            return SettlementRequest(
                "cancel", company, body.request_unique_no, fingerprint, body.third_server_code,
                body.user_name, body.currency, body.amount, None, body.order_id,
                body.reverse_request_unique_no,
            )  # fmt: skip
        fingerprint = self._fingerprint(
            "adjustment", body.third_server_code, body.currency, body.amount,
            body.operation_type, body.biz_type, body.order_id,
        )  # fmt: skip
        return SettlementRequest(
            "adjustment", company, body.request_unique_no, fingerprint, body.third_server_code,
            body.user_name, body.currency, body.amount, body.operation_type, body.order_id,
        )  # fmt: skip

    def _fingerprint(self, *fields: object) -> str:
        """What makes two requests with one number the same request: the business fields.

        Amounts compare by value (`12.5` and `12.50` alike); times, IPs, remarks and metadata are
        left out, since a platform's resend may carry new ones. Unkeyed: nothing secret goes in,
        and a key would turn every replay into a mismatch once it changed.
        """
        canonical = [str(f.normalize()) if hasattr(f, "normalize") else f for f in fields]
        payload = orjson.dumps(canonical, default=str)
        return hashlib.blake2b(payload, digest_size=16).hexdigest()

    async def _decide(self, request: SettlementRequest) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        op = Operation(
            OpKind.SETTLEMENT, f"settlement:{request.kind}", self._access, request,
            (f"settlement:{request.company}", request.number), "", answer="answer",
            future=future, decide=self.rules.decide, journal_keys=request.journal_keys,
        )  # fmt: skip
        try:
            self.runtime.submit(op)
        except ShuttingDown:
            raise Refusal(Code.SERVICE_UNAVAILABLE, "the gateway is shutting down") from None
        budget: asyncio.Future[None] = loop.create_future()
        timer = self.clock.call_later(self.config.answer_budget_s, partial(_end, budget))
        try:
            await asyncio.wait((future, budget), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if not future.done():
            future.add_done_callback(_forget)  # decided later, with nobody left to tell
            self.past_budget += 1
            log.warning("settlement_past_budget", number=request.number, kind=request.kind)
            raise Refusal(
                Code.SERVICE_UNAVAILABLE,
                "not decided within the answer budget; it will still be decided in order, "
                "and a cancel will find its outcome",
            )
        error = future.exception()
        if isinstance(error, ShuttingDown):
            raise Refusal(Code.SERVICE_UNAVAILABLE, "the gateway is shutting down")
        if isinstance(error, GatewayError):
            raise Refusal(Code.INTERNAL_ERROR, "the request could not be recorded; nothing moved")
        if error is not None:
            raise error
        return future.result()


def _forget(future: asyncio.Future[Any]) -> None:
    """Mark a late outcome as seen (a failure would otherwise be logged as never retrieved)."""
    if not future.cancelled():
        future.exception()


def _end(budget: asyncio.Future[None]) -> None:
    if not budget.done():
        budget.set_result(None)


def envelope(outcome: dict[str, Any], trace: str, started: float) -> dict[str, Any]:
    """The platform's answer envelope around an outcome (`code`, `msg`, `data`)."""
    ok = outcome["code"] == Code.OK
    return {
        "code": outcome["code"],
        "msg": outcome["msg"],
        "msgParams": "",
        "tm": int((time.perf_counter() - started) * 1000),
        "trace": trace,
        "bizCode": BIZ_CODE,
        "data": outcome["data"],
        "ok": ok,
        "fail": not ok,
    }


def _validate(model: type[ModelT], body: bytes) -> ModelT:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise Refusal(Code.INVALID_PARAMETER, _first_problem(exc)) from exc


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "json_invalid":
        return "the body is not valid JSON"
    if error["type"] == "model_type":
        return "the body must be a JSON object"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _header_int(headers: Mapping[str, str], name: str, required: bool) -> int | None:
    raw = headers.get(name)  # the mapping is case-insensitive, as HTTP headers are
    if raw is None or raw == "":
        if required:
            raise Refusal(Code.INVALID_PARAMETER, f"header {name} is required")
        return None
    raw = raw.strip()
    digits = raw.removeprefix("-")  # one sign at most: int() raises on "--1"
    value = int(raw) if raw.isascii() and digits.isdigit() and len(raw) <= 20 else None
    # The ledger stores it as a 64-bit integer: a bigger one would fail its whole batch.
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        raise Refusal(Code.INVALID_PARAMETER, f"header {name} must be a 64-bit integer")
    return value
