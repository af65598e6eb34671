"""The settlement listener's own behaviour, end to end on a real gateway (docs/settlement.md
sections 3, 4 and 11): the 403 of the allow-list, a handler's bug answered INTERNAL_ERROR and
logged, malformed integer headers, and the metrics every answer feeds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any, NoReturn

import aiohttp
import orjson
import pytest
import structlog

import manager_gateway.settlement.http as http_module
from manager_gateway.settlement.http import ADJUST, AMOUNT, CANCEL, ROUTES, TRANSFER

from ..conftest import GatewayFactory, Harness
from ..platform import (
    Platform,
    adjustment,
    base_url,
    cancellation,
    fund,
    settlement_gateway,
    transfer,
)

LOGIN = 1001


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """The settlement listener's log lines."""
    with structlog.testing.capture_logs() as captured:
        # A fresh logger under the capture, whatever an earlier in-process CLI test configured.
        monkeypatch.setattr(http_module, "log", structlog.get_logger("manager_gateway.settlement"))
        yield captured


def settlement_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """The captured lines of the settlement listener (the gateway logs its own beside them)."""
    return [line for line in logs if str(line["event"]).startswith("settlement_")]


async def started(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession, **settings: Any
) -> tuple[Harness, Platform]:
    h = await settlement_gateway(make_gateway, **settings)
    await fund(await h.client(), h, LOGIN)
    return h, Platform(base_url(h), session)


def answered(h: Harness) -> dict[tuple[str, str], int]:
    """The settlement answers the metrics counted, by (route, code), zeros left out."""
    return {key: n for key, n in h.gateway.metrics.settlement_answers.items() if n}


def without_tm(answer: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(answer["tm"], int) and 0 <= answer["tm"] < 10_000
    return {k: v for k, v in answer.items() if k != "tm"}


async def test_answers_are_counted_by_route_and_code_with_their_time(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """Every answer counts once under its route and code, and its handling time lands in its
    route's histogram: no more than the time the test waited for it."""
    h, platform = await started(make_gateway, session)
    begun = time.perf_counter()
    body = adjustment(LOGIN, "10")
    await platform.adjust(body)
    await platform.adjust(adjustment(LOGIN, "5000"))
    await platform.adjust(adjustment(LOGIN, "1"), companyId=None)
    await platform.cancel(cancellation(LOGIN, body["requestUniqueNo"], "10"))
    await platform.transfer(transfer(LOGIN, "2"))
    await platform.wallet(LOGIN)
    waited = time.perf_counter() - begun
    assert answered(h) == {
        (ADJUST, "0"): 1,
        (ADJUST, "INSUFFICIENT_FUNDS"): 1,
        (ADJUST, "INVALID_PARAMETER"): 1,
        (CANCEL, "0"): 1,
        (TRANSFER, "0"): 1,
        (AMOUNT, "0"): 1,
    }
    latency = h.gateway.metrics.settlement_latency
    counts = {route: latency[route].snapshot()[0][-1][1] for route in ROUTES}
    assert counts == {ADJUST: 3, CANCEL: 1, TRANSFER: 1, AMOUNT: 1}
    spent = sum(latency[route].snapshot()[1] for route in ROUTES)
    assert 0 < spent <= waited


async def test_a_handler_bug_is_answered_internal_error_and_logged(
    make_gateway: GatewayFactory,
    session: aiohttp.ClientSession,
    logs: list[MutableMapping[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception a handler did not expect is answered HTTP 200 INTERNAL_ERROR in the
    envelope, trace echoed, counted, and logged as `settlement_request_failed` (error, with the
    traceback) naming the route; details stay in the log."""
    h, platform = await started(make_gateway, session)

    def bug(*_: object) -> NoReturn:
        raise RuntimeError("a bug in the headers' check")

    monkeypatch.setattr(h.gateway.settlement, "_headers", bug)
    for route in ROUTES:
        status, answer = await platform.raw(route, b"{}", platform.headers(trace=f"bug-{route}"))
        assert status == 200
        assert without_tm(answer) == {
            "code": "INTERNAL_ERROR",
            "msg": "internal error",
            "msgParams": "",
            "trace": f"bug-{route}",
            "bizCode": "settlement",
            "data": {},
            "ok": False,
            "fail": True,
        }
    status, answer = await platform.raw(ADJUST, b"{}", platform.headers(trace=None))
    assert (status, answer["code"], answer["trace"]) == (200, "INTERNAL_ERROR", "")
    assert settlement_lines(logs) == [
        {
            "event": "settlement_request_failed",
            "route": route,
            "exc_info": True,
            "log_level": "error",
        }
        for route in (*ROUTES, ADJUST)
    ]
    assert answered(h) == {
        (ADJUST, "INTERNAL_ERROR"): 2,
        (CANCEL, "INTERNAL_ERROR"): 1,
        (AMOUNT, "INTERNAL_ERROR"): 1,
        (TRANSFER, "INTERNAL_ERROR"): 1,
    }


async def test_a_malformed_integer_header_is_invalid_parameter(
    make_gateway: GatewayFactory,
    session: aiohttp.ClientSession,
    logs: list[MutableMapping[str, Any]],
) -> None:
    """A doubled sign (`--1`) is refused like any other malformed integer header, not answered
    INTERNAL_ERROR with a traceback in the log."""
    _, platform = await started(make_gateway, session)
    for name in ("companyId", "timestamp"):
        answer = await platform.adjust(adjustment(LOGIN, "1"), **{name: "--1"})
        assert (answer["code"], answer["msg"]) == (
            "INVALID_PARAMETER",
            f"header {name} must be a 64-bit integer",
        )
    assert settlement_lines(logs) == []
    assert await platform.wallet(LOGIN) == "1000.00"


async def test_an_address_outside_the_allow_list_gets_403_in_the_envelope(
    make_gateway: GatewayFactory,
    session: aiohttp.ClientSession,
    logs: list[MutableMapping[str, Any]],
) -> None:
    """With only 127.0.0.2 allowed, a caller from 127.0.0.1 gets HTTP 403 with the envelope
    (FORBIDDEN, the trace echoed) on every route and on /healthz, each logged at debug with the
    address; nothing reaches a handler and nothing is counted."""
    h, platform = await started(make_gateway, session, settlement_allow=("127.0.0.2/32",))
    for route in (*ROUTES, "openapi.json"):
        status, answer = await platform.raw(
            route, orjson.dumps(adjustment(LOGIN, "5")), platform.headers(trace="outside")
        )
        assert status == 403
        assert without_tm(answer) == {
            "code": "FORBIDDEN",
            "msg": "this address may not call the settlement API",
            "msgParams": "",
            "trace": "outside",
            "bizCode": "settlement",
            "data": {},
            "ok": False,
            "fail": True,
        }
    health = f"http://127.0.0.1:{h.gateway.settlement_port}/healthz"
    async with session.get(health) as response:
        assert response.status == 403
        assert (await response.json())["trace"] == ""
    line = {"event": "settlement_forbidden_address", "address": "127.0.0.1", "log_level": "debug"}
    assert settlement_lines(logs) == [line] * (len(ROUTES) + 2)
    assert answered(h) == {}
    assert h.gateway.runtime.state.journal == {}


async def test_every_answer_is_labelled_application_json_exactly(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """Each route's envelope, the OpenAPI document and /healthz carry `Content-Type:
    application/json` byte for byte: media types are case-insensitive in HTTP, but a platform
    client that compares the header as a string must get the spelling it expects."""
    _, platform = await started(make_gateway, session)
    bodies = {
        ADJUST: (adjustment(LOGIN, "1"), "0"),
        CANCEL: (cancellation(LOGIN, "never-sent", "1"), "US_0000002"),
        AMOUNT: ({"thirdServerCode": str(LOGIN), "userName": "u", "currency": "USD"}, "0"),
        TRANSFER: (transfer(LOGIN, "1"), "0"),
    }
    for route, (body, code) in bodies.items():
        async with session.post(
            f"{platform.base_url}/{route}", data=orjson.dumps(body), headers=platform.headers()
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json", route
            assert (await response.json())["code"] == code, route
    root = platform.base_url.removesuffix("/api")
    for url in (f"{platform.base_url}/openapi.json", f"{root}/healthz"):
        async with session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json", url
            assert await response.json()
