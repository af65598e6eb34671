"""The settlement service between the HTTP routes and the main loop (docs/settlement.md sections 3
to 5): the header checks and their sentences, the body's first problem, the request the main loop
gets and its fingerprint, the answer budget on a FakeClock, and the envelope.

The main loop is replaced by its seam (`submit`, `account`): what `_decide` hands over and how it
answers each way the operation can end, with time moved by hand.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import time
from collections.abc import Iterator, MutableMapping
from decimal import Decimal
from typing import Any

import orjson
import pytest
import structlog

import manager_gateway.settlement.service as service_module
from manager_gateway.protocol.errors import InternalError, ShuttingDown
from manager_gateway.runtime.operations import Operation, OpKind
from manager_gateway.runtime.records import Account
from manager_gateway.session.access import Access, SessionType
from manager_gateway.settlement.codes import Code, Refusal
from manager_gateway.settlement.models import AdjustmentBody, CancelBody, TransferBody
from manager_gateway.settlement.rules import Rules, SettlementRequest
from manager_gateway.settlement.service import ServiceConfig, SettlementService, envelope
from tests.fakes import FakeClock
from tests.unit.test_settlement_models import ADJUSTMENT, CANCEL, NOW_MS, TRANSFER

BUDGET_S = 2.5
OWNER = Access("settlement", SessionType.MANAGER, ("*",), float("inf"))


class Headers(dict[str, str]):
    """Case-insensitive, as aiohttp's request headers are."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


def headers(**values: str | None) -> Headers:
    given: dict[str, str | None] = {
        "trace": "t-1",
        "companyId": "1",
        "timestamp": str(NOW_MS),
        **values,
    }
    return Headers({k.lower(): v for k, v in given.items() if v is not None})


class MainLoopSeam:
    """What the service uses of the main loop: `submit` and the committed accounts."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.ops: list[Operation] = []
        self.accounts: dict[int, Account] = {}
        self.refuse = refuse

    def submit(self, op: Operation) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.ops.append(op)

    def account(self, login: int) -> Account | None:
        return self.accounts.get(login)

    @property
    def future(self) -> asyncio.Future[dict[str, Any]]:
        (op,) = self.ops
        assert op.future is not None
        return op.future


class World:
    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock(wall=NOW_MS / 1000)
        self.runtime = MainLoopSeam(config.pop("refuse", None))
        self.rules = Rules("credit", "deduct_available", OWNER)
        self.draining = False
        settings = ServiceConfig(
            config.get("company_ids", frozenset()),
            config.get("token"),
            config.get("max_skew_s", 300.0),
            BUDGET_S,
        )
        self.service = SettlementService(
            settings, self.runtime, self.rules, self.clock, OWNER, lambda: self.draining,  # type: ignore[arg-type]
        )  # fmt: skip


def refusal(world: World, given: Headers, timestamp_required: bool = True) -> tuple[str, str]:
    with pytest.raises(Refusal) as raised:
        world.service._headers(given, timestamp_required)
    return str(raised.value.code), raised.value.msg


def accepts(world: World, given: Headers) -> bool:
    return world.service._headers(given, timestamp_required=True).trace == given["trace"]


def body(values: dict[str, Any], **changes: Any) -> bytes:
    return orjson.dumps({**values, **changes})


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        # A fresh logger under the capture, whatever an earlier in-process CLI test configured.
        monkeypatch.setattr(
            service_module, "log", structlog.get_logger("manager_gateway.settlement")
        )
        yield captured


def test_a_refusal_carries_its_code_and_sentence() -> None:
    """A Refusal is answered with its code and sentence, and reads as the sentence wherever it
    is shown (a traceback, a log line)."""
    refusal = Refusal(Code.CURRENCY_MISMATCH, "currency 'EUR' is not the account's")
    assert (refusal.code, refusal.msg) == (
        Code.CURRENCY_MISMATCH,
        "currency 'EUR' is not the account's",
    )
    assert str(refusal) == "currency 'EUR' is not the account's"


# -- headers ---------------------------------------------------------------------------------


def test_accepted_headers_give_the_trace_and_company() -> None:
    checked = World().service._headers(headers(companyId=" 42 "), timestamp_required=True)
    assert (checked.trace, checked.company) == ("t-1", 42)


def test_the_bearer_token_is_checked_only_when_configured() -> None:
    guarded = World(token="tok")
    wrong = ("FORBIDDEN", "missing or wrong bearer token")
    assert refusal(guarded, headers()) == wrong
    assert refusal(guarded, headers(Authorization="Bearer other")) == wrong
    assert refusal(guarded, headers(Authorization="tok")) == wrong
    assert guarded.service._headers(headers(Authorization="Bearer tok"), True).company == 1
    assert accepts(World(), headers(Authorization="Bearer anything"))


@pytest.mark.parametrize("trace", [None, ""])
def test_trace_is_required(trace: str | None) -> None:
    assert refusal(World(), headers(trace=trace)) == (
        "INVALID_PARAMETER",
        "header trace is required",
    )


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("companyId", "x1"),
        ("companyId", "1.5"),
        ("companyId", "1e3"),
        ("companyId", "--1"),
        ("companyId", "\u0661"),  # a digit to str.isdigit(), but not an ASCII one
        ("companyId", "9223372036854775808"),  # 2**63
        ("companyId", "-9223372036854775809"),
        ("companyId", "000000000000000000001"),  # 21 characters
        ("timestamp", "soon"),
        ("timestamp", "+1800000000000"),
    ],
)
def test_an_integer_header_must_be_a_64_bit_integer(name: str, raw: str) -> None:
    msg = f"header {name} must be a 64-bit integer"
    assert refusal(World(), headers(**{name: raw})) == ("INVALID_PARAMETER", msg)


@pytest.mark.parametrize(
    ("raw", "company"),
    [
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),  # 20 characters
        ("00000000000000000001", 1),
        (" 7\t", 7),
        ("-3", -3),
    ],
)
def test_integer_headers_at_their_bounds_are_read(raw: str, company: int) -> None:
    assert World().service._headers(headers(companyId=raw), True).company == company


@pytest.mark.parametrize("name", ["companyId", "timestamp"])
@pytest.mark.parametrize("raw", [None, ""])
def test_required_integer_headers(name: str, raw: str | None) -> None:
    msg = f"header {name} is required"
    assert refusal(World(), headers(**{name: raw})) == ("INVALID_PARAMETER", msg)


def test_the_timestamp_is_optional_where_not_required() -> None:
    world = World(max_skew_s=1.0)
    assert world.service._headers(headers(timestamp=None), False).company == 1
    assert world.service._headers(headers(timestamp=""), False).company == 1
    # Given anyway, it is still checked.
    stale = headers(timestamp=str(NOW_MS - 5_000))
    assert refusal(world, stale, timestamp_required=False)[0] == "REQUEST_EXPIRED"


def test_companies_outside_the_accepted_ones_are_forbidden() -> None:
    world = World(company_ids=frozenset({1, 2}))
    assert refusal(world, headers(companyId="3")) == ("FORBIDDEN", "companyId 3 is not accepted")
    assert world.service._headers(headers(companyId="2"), True).company == 2
    assert accepts(World(), headers(companyId="3"))


@pytest.mark.parametrize(("offset_ms", "away"), [(301_000, 301), (-3_600_400, 3600)])
def test_a_stale_timestamp_says_how_far_it_is(offset_ms: int, away: int) -> None:
    world = World()
    stamp = headers(timestamp=str(NOW_MS + offset_ms))
    msg = f"timestamp is {away} s away from the gateway's clock (at most 300 s)"
    assert refusal(world, stamp) == ("REQUEST_EXPIRED", msg)


def test_skew_is_measured_in_seconds_against_the_wall_clock() -> None:
    """The header is unix milliseconds: 299.9 s ahead passes a 300 s bound; the clock moving on
    by 600 s puts the same stamp 300.1 s behind."""
    world = World()
    stamp = headers(timestamp=str(NOW_MS + 299_900))
    assert world.service._headers(stamp, True).company == 1
    world.clock.advance(600)
    assert refusal(world, stamp)[0] == "REQUEST_EXPIRED"


# -- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        (b"{", "the body is not valid JSON"),
        (b"", "the body is not valid JSON"),
        (b"[1]", "the body must be a JSON object"),
        (b"null", "the body must be a JSON object"),
        (body({k: v for k, v in ADJUSTMENT.items() if k != "orderId"}), "orderId: Field required"),
        (body(ADJUSTMENT, requestTime="x"), "requestTime: Input should be a valid integer"),
        (body(ADJUSTMENT, amount="0"), "amount: must not be zero"),
        (body(ADJUSTMENT, amount="1.005"), "amount has more decimals than amountDigits (2)"),
        (
            body(ADJUSTMENT, operationType="X"),
            "operationType must be one of OPEN_POSITION, NORMAL_CLOSE, ABNORMAL_OVERTRADING",
        ),
    ],
)
async def test_a_bad_body_is_answered_with_its_first_problem(raw: bytes, msg: str) -> None:
    """docs/settlement.md 4.2: the body not JSON, not an object, or its first bad field by its
    location (a whole-body check names its fields itself), without "Value error"."""
    world = World()
    answer = await world.service.adjust(headers(), raw)
    assert (answer["code"], answer["msg"]) == ("INVALID_PARAMETER", msg)
    assert world.runtime.ops == []


# -- the request the main loop gets --------------------------------------------------------


def digest(*fields: object) -> str:
    return hashlib.blake2b(orjson.dumps(list(fields)), digest_size=16).hexdigest()


def test_each_body_becomes_its_request_with_its_fingerprint() -> None:
    """The fingerprint is the business fields, the amount by value; it is stored in the journal,
    so it must not change between versions (a replay after an upgrade would be a mismatch)."""
    service = World().service
    adjustment = service._request(7, AdjustmentBody.model_validate_json(body(ADJUSTMENT)))
    fingerprint = digest("adjustment", "1001", "USD", "12.5", "OPEN_POSITION", 1, 99)
    assert fingerprint == "df739e8c457ad95344b7475ebfe2a9cf"
    assert adjustment == SettlementRequest(
        "adjustment", 7, "r-1", fingerprint, "1001", "u-1", "USD", Decimal("12.50"),
        "OPEN_POSITION", 99,
    )  # fmt: skip
    cancel = service._request(7, CancelBody.model_validate_json(body(CANCEL, orderId=5)))
    assert cancel == SettlementRequest(
        "cancel", 7, "c-1", digest("cancel", "1001", "USD", "12.5", "r-1", 1, 5), "1001", "u-1",
        "USD", Decimal("12.50"), None, 5, "r-1",
    )  # fmt: skip
    transfer = service._request(7, TransferBody.model_validate_json(body(TRANSFER)))
    assert transfer == SettlementRequest(
        "transfer", 7, "tx-1", digest("transfer", "1001", "USD", "5"), "1001", "1001", "USD",
        Decimal("5"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model", "values", "changes"),
    [
        (AdjustmentBody, ADJUSTMENT, {"thirdServerCode": "1002"}),
        (AdjustmentBody, ADJUSTMENT, {"currency": "EUR"}),
        (AdjustmentBody, ADJUSTMENT, {"amount": "12.51"}),
        (AdjustmentBody, ADJUSTMENT, {"operationType": "NORMAL_CLOSE"}),
        (AdjustmentBody, ADJUSTMENT, {"bizType": 2}),
        (AdjustmentBody, ADJUSTMENT, {"orderId": 100}),
        (CancelBody, CANCEL, {"thirdServerCode": "1002"}),
        (CancelBody, CANCEL, {"currency": "EUR"}),
        (CancelBody, CANCEL, {"amount": "1"}),
        (CancelBody, CANCEL, {"reverseRequestUniqueNo": "r-2"}),
        (CancelBody, CANCEL, {"bizType": 2}),
        (CancelBody, CANCEL, {"orderId": 1}),
        (TransferBody, TRANSFER, {"username": "1002"}),
        (TransferBody, TRANSFER, {"currency": "EUR"}),
        (TransferBody, TRANSFER, {"amount": "6"}),
    ],
)
def test_a_business_field_changes_the_fingerprint(
    model: type[AdjustmentBody | CancelBody | TransferBody],
    values: dict[str, Any],
    changes: dict[str, Any],
) -> None:
    service = World().service
    original = service._request(1, model.model_validate_json(body(values)))
    changed = service._request(1, model.model_validate_json(body(values, **changes)))
    assert changed.fingerprint != original.fingerprint


@pytest.mark.parametrize(
    ("model", "values", "changes"),
    [
        (AdjustmentBody, ADJUSTMENT, {"amount": "12.500", "amountDigits": 3}),
        (AdjustmentBody, ADJUSTMENT, {"userName": "other", "ip": "x", "metadata": "m"}),
        (AdjustmentBody, ADJUSTMENT, {"requestTime": NOW_MS + 1}),
        (CancelBody, CANCEL, {"cancelRemark": "again", "requestTime": NOW_MS + 1}),
        (TransferBody, TRANSFER, {"amount": 5, "remark": "resent", "ip": None}),
    ],
)
def test_a_resend_with_new_times_or_remarks_keeps_the_fingerprint(
    model: type[AdjustmentBody | CancelBody | TransferBody],
    values: dict[str, Any],
    changes: dict[str, Any],
) -> None:
    service = World().service
    original = service._request(1, model.model_validate_json(body(values)))
    resent = service._request(1, model.model_validate_json(body(values, **changes)))
    assert resent.fingerprint == original.fingerprint


async def test_a_request_becomes_one_settlement_operation() -> None:
    """What the main loop gets: a SETTLEMENT operation named after the request's kind, keyed by
    its company and number, authored by the settlement access, decided by the rules, answered
    with the outcome's `answer`."""
    world = World()
    pending = asyncio.ensure_future(world.service.adjust(headers(), body(ADJUSTMENT)))
    await asyncio.sleep(0)  # one turn: the request reaches submit
    (op,) = world.runtime.ops
    assert (op.kind, op.command, op.key, op.answer) == (
        OpKind.SETTLEMENT, "settlement:adjustment", ("settlement:1", "r-1"), "answer",
    )  # fmt: skip
    assert op.access is OWNER and op.decide == world.rules.decide
    assert op.data.number == "r-1" and op.waiter is None
    assert op.journal_keys == ((1, "request", "r-1"),)
    world.runtime.future.set_result({"code": "0", "msg": "success", "data": {"order": 3}})
    answer = await pending
    assert (answer["code"], answer["data"], answer["trace"]) == ("0", {"order": 3}, "t-1")
    assert world.clock.pending_timers() == 0  # the budget's timer is cancelled
    assert world.service.past_budget == 0


# -- the answer budget -----------------------------------------------------------------------


async def test_past_the_budget_the_answer_is_service_unavailable(
    logs: list[MutableMapping[str, Any]],
) -> None:
    """Not decided within settlement_answer_budget_ms: SERVICE_UNAVAILABLE saying it will still
    be decided, counted and logged; the late outcome is then taken without a complaint."""
    world = World()
    pending = asyncio.ensure_future(world.service.transfer(headers(), body(TRANSFER)))
    await asyncio.sleep(0)
    world.clock.advance(BUDGET_S - 0.001)
    await asyncio.sleep(0)
    assert not pending.done()
    world.clock.advance(0.001)
    answer = await pending
    assert (answer["code"], answer["msg"]) == (
        "SERVICE_UNAVAILABLE",
        "not decided within the answer budget; it will still be decided in order, "
        "and a cancel will find its outcome",
    )
    assert world.service.past_budget == 1
    assert logs == [
        {"event": "settlement_past_budget", "number": "tx-1", "kind": "transfer",
         "log_level": "warning"},
    ]  # fmt: skip
    world.runtime.future.set_result({"code": "0", "msg": "success", "data": {}})
    world.runtime.ops.clear()
    second = asyncio.ensure_future(world.service.adjust(headers(), body(ADJUSTMENT)))
    await asyncio.sleep(0)
    world.clock.advance(BUDGET_S)
    assert (await second)["code"] == "SERVICE_UNAVAILABLE"
    assert world.service.past_budget == 2  # gateway_settlement_past_budget_total
    assert [line["number"] for line in logs] == ["tx-1", "r-1"]


async def test_a_late_failure_is_retrieved_and_a_cancelled_one_ignored() -> None:
    """An outcome that arrives after the answer was sent is marked seen: a late failure is not
    reported as never retrieved, and a cancelled one raises nothing in its callback."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        for end in ("fail", "cancel"):
            world = World()
            pending = asyncio.ensure_future(world.service.adjust(headers(), body(ADJUSTMENT)))
            await asyncio.sleep(0)
            world.clock.advance(BUDGET_S)
            assert (await pending)["code"] == "SERVICE_UNAVAILABLE"
            future = world.runtime.future
            if end == "fail":
                future.set_exception(InternalError())
            else:
                future.cancel()
            await asyncio.sleep(0)  # its done callbacks run
            del future, world, pending
            gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []


@pytest.mark.parametrize(
    ("error", "code", "msg"),
    [
        (ShuttingDown(), "SERVICE_UNAVAILABLE", "the gateway is shutting down"),
        (InternalError(), "INTERNAL_ERROR", "the request could not be recorded; nothing moved"),
    ],
)
async def test_how_a_failed_operation_is_answered(error: Exception, code: str, msg: str) -> None:
    world = World()
    pending = asyncio.ensure_future(world.service.cancel(headers(), body(CANCEL)))
    await asyncio.sleep(0)
    world.runtime.future.set_exception(error)
    answer = await pending
    assert (answer["code"], answer["msg"], answer["data"]) == (code, msg, {})


async def test_an_unexpected_failure_reaches_the_route() -> None:
    """Anything but a gateway error is a bug: it propagates (the route answers INTERNAL_ERROR
    and logs it)."""
    world = World()
    pending = asyncio.ensure_future(world.service.cancel(headers(), body(CANCEL)))
    await asyncio.sleep(0)
    world.runtime.future.set_exception(KeyError("bug"))
    with pytest.raises(KeyError):
        await pending


async def test_shutting_down_refuses_before_and_at_submission() -> None:
    """Draining, or a main loop that no longer takes operations: SERVICE_UNAVAILABLE."""
    msg = ("SERVICE_UNAVAILABLE", "the gateway is shutting down")
    draining = World()
    draining.draining = True
    answer = await draining.service.adjust(headers(), body(ADJUSTMENT))
    assert ((answer["code"], answer["msg"]), draining.runtime.ops) == (msg, [])
    closed = World(refuse=ShuttingDown())
    answer = await closed.service.adjust(headers(), body(ADJUSTMENT))
    assert (answer["code"], answer["msg"]) == msg
    assert closed.clock.pending_timers() == 0


# -- the amount query ------------------------------------------------------------------------


def funded(login: int, credit: str, digits: int = 2) -> Account:
    return Account(
        login, "demo", "n", "e", "h", 100, 1, "JPY", digits, Decimal(0), Decimal(credit), 0
    )


async def test_the_amount_query_answers_the_wallet() -> None:
    """The wallet with exactly the currency's digits, the account's currency and digits, and
    the userName echoed ("" when absent); no timestamp needed, nothing submitted."""
    world = World()
    world.runtime.accounts[77] = funded(77, "1234.5", digits=0)
    query = {"thirdServerCode": "77", "userName": "tb-9", "currency": "JPY"}
    answer = await world.service.amount(headers(timestamp=None), orjson.dumps(query))
    assert (answer["code"], answer["msg"]) == ("0", "success")
    assert answer["data"] == {
        "userName": "tb-9", "currency": "JPY", "amount": "1234", "amountDigits": 0,
    }  # fmt: skip
    anonymous = {"thirdServerCode": "77", "currency": "JPY"}
    answer = await world.service.amount(headers(), orjson.dumps(anonymous))
    assert answer["data"]["userName"] == ""
    assert world.runtime.ops == []


@pytest.mark.parametrize(
    ("given", "raw", "code", "msg"),
    [
        ({"trace": None}, b"{}", "INVALID_PARAMETER", "header trace is required"),
        ({}, b"[]", "INVALID_PARAMETER", "the body must be a JSON object"),
        ({}, b'{"thirdServerCode":"9","currency":"JPY"}', "ACCOUNT_NOT_FOUND",
         "no account with thirdServerCode '9'"),
        ({}, b'{"thirdServerCode":"77","currency":"USD"}', "CURRENCY_MISMATCH",
         "currency 'USD' is not the account's currency 'JPY'"),
    ],
)  # fmt: skip
async def test_the_amount_query_refusals(
    given: dict[str, str | None], raw: bytes, code: str, msg: str
) -> None:
    world = World()
    world.runtime.accounts[77] = funded(77, "1")
    answer = await world.service.amount(headers(**given), raw)
    assert (answer["code"], answer["msg"], answer["data"]) == (code, msg, {})
    assert answer["trace"] == ("" if "trace" in given else "t-1")  # echoed, "" when absent


@pytest.mark.parametrize(
    ("route", "values"),
    [("cancel", CANCEL), ("transfer", TRANSFER)],
)
async def test_cancels_and_transfers_need_no_timestamp(route: str, values: dict[str, Any]) -> None:
    """Only an adjustment needs the timestamp header (docs/settlement.md 5.2 and 5.4)."""
    world = World()
    pending = asyncio.ensure_future(
        getattr(world.service, route)(headers(timestamp=None), body(values))
    )
    await asyncio.sleep(0)
    world.runtime.future.set_result({"code": "0", "msg": "success", "data": {}})
    assert (await pending)["code"] == "0"
    refused = await world.service.adjust(headers(timestamp=None), body(ADJUSTMENT))
    assert refused["msg"] == "header timestamp is required"


# -- the envelope ----------------------------------------------------------------------------


def test_the_envelope() -> None:
    """docs/settlement.md 4.1: the outcome with msgParams "", the handling time in whole ms, the
    trace, bizCode "settlement", and ok/fail from the code."""
    started = time.perf_counter() - 100.0
    ok = envelope({"code": "0", "msg": "success", "data": {"a": 1}}, "tr", started)
    tm = ok.pop("tm")
    assert 100_000 <= tm < 100_100  # whole milliseconds since `started`
    assert ok == {
        "code": "0", "msg": "success", "msgParams": "", "trace": "tr", "bizCode": "settlement",
        "data": {"a": 1}, "ok": True, "fail": False,
    }  # fmt: skip
    failed = envelope(
        {"code": str(Code.FORBIDDEN), "msg": "no", "data": {}}, "", time.perf_counter()
    )
    assert (failed["ok"], failed["fail"], failed["tm"], failed["trace"]) == (False, True, 0, "")
