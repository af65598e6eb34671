"""External Settlement end to end: a real gateway, its real HTTP listener and ledger, aiohttp's
client as the platform, and TCP sessions watching (docs/settlement.md)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from gateway_bench.settlement.kit import run_kit
from gateway_bench.settlement.kitreport import KitOptions
from gateway_bench.settlement.simspec import SimulationSpec
from gateway_bench.settlement.simulator import run_simulation
from manager_gateway.settlement.http import ADJUST, AMOUNT, CANCEL, TRANSFER

from ..conftest import Client, GatewayFactory, Harness, ledger, wait_until
from ..platform import (
    Platform,
    adjustment,
    base_url,
    cancellation,
    fund,
    number,
    settlement_gateway,
    transfer,
)
from ..postgres import SQLITE_ONLY, on_both_engines  # noqa: F401 (runs every test here on both engines)

LOGIN = 1001
OTHER = 1002


@dataclass
class World:
    h: Harness
    platform: Platform
    tcp: Client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def start(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession, **settings: Any
) -> World:
    """A gateway with settlement on, accounts 1001 and 1002 holding 1000.00 of credit."""
    h = await settlement_gateway(make_gateway, **settings)
    tcp = await h.client()
    await fund(tcp, h, LOGIN, OTHER)
    return World(h, Platform(base_url(h), session), tcp)


@pytest.fixture
async def world(make_gateway: GatewayFactory, session: aiohttp.ClientSession) -> World:
    return await start(make_gateway, session)


def assert_verifies(h: Harness) -> None:
    problems = h.verify()
    assert problems == []


# -- routes and codes ----------------------------------------------------------------------


async def test_adjust_query_cancel_round_trip(world: World) -> None:
    """Open deducts, the query shows it, the cancel gives it back; answers carry the order, the
    moved amount and the wallet; the ledger verifies."""
    platform = world.platform
    body = adjustment(LOGIN, "12.50")
    opened = await platform.adjust(body)
    assert (opened["code"], opened["msg"], opened["bizCode"]) == ("0", "success", "settlement")
    assert opened["data"] == {
        "order": 3,
        "amount": "-12.50",
        "amountDigits": 2,
        "walletAmount": "987.50",
    }
    assert await platform.wallet(LOGIN) == "987.50"
    record = await world.tcp.ok("GetTradeByOrder", {"order": 3})
    assert (record["cmd"], record["profit"], record["state"]) == (9, -12.5, 3)
    assert body["requestUniqueNo"] in record["comment"]
    undone = await platform.cancel(cancellation(LOGIN, body["requestUniqueNo"], "12.50"))
    assert undone["code"] == "0" and undone["data"]["walletAmount"] == "1000.00"
    assert (await world.tcp.ok("GetTradeByOrder", {"order": 3}))["state"] == 6
    assert await platform.wallet(LOGIN) == "1000.00"
    assert_verifies(world.h)


async def test_every_answer_code(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """Each code of the answer table, from the request that earns it; nothing moves on any
    refusal."""
    world = await start(
        make_gateway, session, settlement_company_ids=(1, 2), groups=_groups("demo", "eur")
    )
    platform = world.platform
    codes: dict[str, str] = {}

    async def code(answer: dict[str, Any], label: str) -> None:
        codes[label] = answer["code"]

    body = adjustment(LOGIN, "10")
    await code(await platform.adjust(body), "done")
    await code(await platform.adjust(body), "replay")
    await code(await platform.adjust({**body, "amount": "11"}), "reuse")
    refused = adjustment(LOGIN, "5000")
    await code(await platform.adjust(refused), "funds")
    await code(
        await platform.cancel(cancellation(LOGIN, refused["requestUniqueNo"], "5000")), "refused"
    )
    ghost = number("ghost")
    await code(await platform.cancel(cancellation(LOGIN, ghost, "3")), "unknown")
    await code(await platform.adjust(adjustment(LOGIN, "3", requestUniqueNo=ghost)), "late")
    await code(await platform.adjust(adjustment(4242, "1")), "account")
    await code(await platform.adjust(adjustment(LOGIN, "1", currency="EUR")), "currency")
    await code(await platform.adjust(adjustment(LOGIN, "1.005", amountDigits=3)), "digits")
    await code(await platform.adjust({**adjustment(LOGIN, "1"), "bizType": "one"}), "type")
    await code(await platform.adjust(adjustment(LOGIN, "1"), timestamp="1000000000000"), "stale")
    await code(await platform.adjust(adjustment(LOGIN, "1"), companyId="3"), "company")
    assert codes == {
        "done": "0",
        "replay": "0",
        "reuse": "DUPLICATE_REQUEST_MISMATCH",
        "funds": "INSUFFICIENT_FUNDS",
        "refused": "US_0000001",
        "unknown": "US_0000002",
        "late": "REQUEST_CANCELLED",
        "account": "ACCOUNT_NOT_FOUND",
        "currency": "CURRENCY_MISMATCH",
        "digits": "INVALID_PARAMETER",
        "type": "INVALID_PARAMETER",
        "stale": "REQUEST_EXPIRED",
        "company": "FORBIDDEN",
    }
    assert await platform.wallet(LOGIN) == "990.00"
    assert_verifies(world.h)


def _groups(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "currency": "USD", "digits": 2} for name in names]


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        ({"requestUniqueNo": None}, "requestUniqueNo"),
        ({"amount": {"v": 1}}, "amount"),
        ({"amount": "1e999999"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "1000000000.01"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amountDigits": 9}, "amountDigits"),
        ({"userName": "u" * 49}, "userName"),
        ({"requestUniqueNo": "r" * 49}, "requestUniqueNo"),
        ({"metadata": "m" * 201}, "metadata"),
        ({"requestTime": 12}, "requestTime"),
        ({"orderId": 2**63}, "orderId"),
        ({"operationType": "LIQUIDATE"}, "operationType"),
        ({"thirdServerCode": 1001}, "thirdServerCode"),
    ],
    ids=lambda value: str(value)[:30],
)
async def test_invalid_parameters_name_the_field(
    world: World, mutation: dict[str, Any], field: str
) -> None:
    """A missing, mistyped, too long or out-of-range field is INVALID_PARAMETER naming it, and
    the number stays unused: the corrected request then applies."""
    body = adjustment(LOGIN, "1")
    bad = {k: v for k, v in {**body, **mutation}.items() if v is not None}
    answer = await world.platform.adjust(bad)
    assert answer["code"] == "INVALID_PARAMETER", answer
    assert field in answer["msg"] or "amount" in answer["msg"], answer["msg"]
    assert (await world.platform.adjust(body))["code"] == "0"
    assert await world.platform.wallet(LOGIN) == "999.00"


async def test_bodies_that_are_not_objects(world: World) -> None:
    """Not JSON, not an object, empty: INVALID_PARAMETER, HTTP 200, trace echoed."""
    for body in (b"{", b"[1,2]", b"", b"null", b'"x"', b"\xff\xfe"):
        status, answer = await world.platform.raw(ADJUST, body)
        assert status == 200
        assert answer["code"] == "INVALID_PARAMETER", (body, answer)
        assert answer["trace"].startswith("trace-")


async def test_headers(world: World) -> None:
    """trace and companyId are required, timestamp on adjustments only; a bad integer header is
    INVALID_PARAMETER; the answer echoes trace."""
    platform = world.platform
    assert (await platform.adjust(adjustment(LOGIN, "1"), trace=None))["code"] == (
        "INVALID_PARAMETER"
    )
    for missing in ("companyId", "timestamp"):
        answer = await platform.adjust(adjustment(LOGIN, "1"), **{missing: None})
        assert (answer["code"], missing in answer["msg"]) == ("INVALID_PARAMETER", True)
    answer = await platform.adjust(adjustment(LOGIN, "1"), companyId="one")
    assert answer["code"] == "INVALID_PARAMETER"
    body = adjustment(LOGIN, "1")
    applied = await platform.adjust(body)
    cancel = await platform.cancel(
        cancellation(LOGIN, body["requestUniqueNo"], "1"), timestamp=None
    )
    assert (applied["code"], cancel["code"]) == ("0", "0")
    assert await platform.wallet(LOGIN) == "1000.00"


async def test_http_level_refusals(world: World) -> None:
    """Unknown route 404, wrong method 405, a body over 64 KiB 413; the OpenAPI document and
    the health route are served."""
    platform = world.platform
    assert (await platform.raw("no-such-route", b"{}"))[0] == 404
    assert (await platform.raw(ADJUST, b"", method="GET"))[0] == 405
    status, _ = await platform.raw(ADJUST, b'{"pad":"' + b"x" * (64 * 1024) + b'"}')
    assert status == 413
    status, document = await platform.raw("openapi.json", b"", method="GET")
    assert status == 200
    assert set(document["paths"]) == {
        f"/api/{route}" for route in (ADJUST, CANCEL, AMOUNT, TRANSFER)
    }
    schema = document["components"]["schemas"]["AdjustmentBody"]
    assert {"thirdServerCode", "requestUniqueNo", "amount"} <= set(schema["properties"])
    assert "requestUniqueNo" in schema["required"]
    async with platform.session.get(
        f"http://127.0.0.1:{world.h.gateway.settlement_port}/healthz"
    ) as response:
        assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_addresses_outside_the_allow_list_get_403(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """With only 127.0.0.2/32 allowed, a caller from 127.0.0.1 gets HTTP 403 and moves nothing;
    from 127.0.0.2 it is served."""
    world = await start(make_gateway, session, settlement_allow=("127.0.0.2/32",))
    body = adjustment(LOGIN, "5")
    status, answer = await world.platform.raw(ADJUST, orjson.dumps(body))
    assert status == 403 and answer["code"] == "FORBIDDEN"
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as allowed:
        inside = Platform(world.platform.base_url, allowed)
        assert (await inside.adjust(body))["code"] == "0"
        assert await inside.wallet(LOGIN) == "995.00"


async def test_bearer_token(make_gateway: GatewayFactory, session: aiohttp.ClientSession) -> None:
    """With settlement_token set, a request without the bearer token or with another one is
    FORBIDDEN; with it, served."""
    world = await start(make_gateway, session, settlement_token="s3cret-token")
    platform = world.platform
    body = adjustment(LOGIN, "2")
    assert (await platform.adjust(body))["code"] == "FORBIDDEN"
    wrong = await platform.adjust(body, Authorization="Bearer nope")
    assert wrong["code"] == "FORBIDDEN"
    right = await platform.adjust(body, Authorization="Bearer s3cret-token")
    assert right["code"] == "0"


async def test_transfer_resent_moves_once(world: World) -> None:
    """A transfer resent five times (with legacy field spellings) moves its amount once."""
    body = transfer(LOGIN, "25.10")
    answers = [await world.platform.transfer(body) for _ in range(5)]
    assert [a["code"] for a in answers] == ["0"] * 5
    assert len({orjson.dumps(a["data"]) for a in answers}) == 1
    assert await world.platform.wallet(LOGIN) == "1025.10"


async def test_amount_query(world: World) -> None:
    """The query answers the wallet with exactly the currency's digits; unknown accounts and
    other currencies are refused."""
    await world.tcp.ok("CreditIn", {"login": OTHER, "amount": 0.5, "comment": "c"})
    assert await world.platform.wallet(OTHER) == "1000.50"
    unknown = await world.platform.post(
        AMOUNT, {"thirdServerCode": "999999", "userName": "u", "currency": "USD"}
    )
    euro = await world.platform.post(
        AMOUNT, {"thirdServerCode": str(LOGIN), "userName": "u", "currency": "EUR"}
    )
    assert (unknown["code"], euro["code"]) == ("ACCOUNT_NOT_FOUND", "CURRENCY_MISMATCH")


async def test_balance_wallet_and_overtrading_policy(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """settlement_field = balance moves the balance; deduct_available takes what is there."""
    world = await start(make_gateway, session, settlement_field="balance")
    await world.tcp.ok("BalanceIn", {"login": LOGIN, "amount": 30})
    answer = await world.platform.adjust(adjustment(LOGIN, "-50", "ABNORMAL_OVERTRADING"))
    assert answer["code"] == "0" and answer["data"]["amount"] == "-30.00"
    account = await world.tcp.ok("GetAccountByLogin", {"login": LOGIN})
    assert (account["balance"], account["credit"]) == (0.0, 1000.0)


# -- events --------------------------------------------------------------------------------


async def test_adjustments_reach_tcp_sessions_as_events(world: World) -> None:
    """An adjustment and its reversal reach a listening TCP session as trade:event then
    balance:event, like any finance command; a session whose masks exclude the account hears
    nothing."""
    listener = await world.h.client()
    await listener.ok("HealthCheck")
    outsider = await world.h.client(groups=["vip*"])
    await outsider.ok("HealthCheck")
    body = adjustment(LOGIN, "40")
    opened = await world.platform.adjust(body)
    trade, balance = await listener.next_event(), await listener.next_event()
    assert (trade["event"], trade["type"]) == ("trade:event", 0)
    assert trade["data"]["order"] == opened["data"]["order"]
    assert trade["data"]["profit"] == -40.0
    assert (balance["event"], balance["data"]["credit"]) == ("balance:event", 960.0)
    await world.platform.cancel(cancellation(LOGIN, body["requestUniqueNo"], "40"))
    trade, balance = await listener.next_event(), await listener.next_event()
    assert (trade["type"], trade["data"]["state"]) == (2, 6)
    assert balance["data"]["credit"] == 1000.0
    assert (await outsider.ok("HealthCheck"))["status"] == "ok"
    assert outsider.drain_events() == []


# -- budget, failures, shutdown --------------------------------------------------------------


@SQLITE_ONLY
async def test_past_the_budget_then_the_cancel_finds_the_outcome(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """With the ledger stalled, an adjustment is answered SERVICE_UNAVAILABLE within the budget;
    it is still decided in order, and the platform's cancel then reverses it."""
    world = await start(make_gateway, session, gated=True, settlement_answer_budget_ms=200)
    ledger(world.h).hold()
    body = adjustment(LOGIN, "7")
    late = await world.platform.adjust(body)
    assert late["code"] == "SERVICE_UNAVAILABLE"
    cancel = asyncio.ensure_future(
        world.platform.cancel(cancellation(LOGIN, body["requestUniqueNo"], "7"))
    )
    ledger(world.h).release()
    undone = await cancel
    assert undone["code"] in ("0", "SERVICE_UNAVAILABLE")
    if undone["code"] == "SERVICE_UNAVAILABLE":  # its own budget ran out first: resend it
        undone = await world.platform.cancel(cancellation(LOGIN, body["requestUniqueNo"], "7"))
    assert undone["code"] == "0"
    assert await world.platform.wallet(LOGIN) == "1000.00"
    assert_verifies(world.h)


@SQLITE_ONLY
async def test_a_failed_commit_moves_nothing(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """A ledger commit that fails answers INTERNAL_ERROR with nothing moved or journaled: the
    platform's cancel then finds nothing (US_0000002)."""
    world = await start(make_gateway, session, gated=True)
    ledger(world.h).fail_next = OSError("disk on fire")
    body = adjustment(LOGIN, "9")
    assert (await world.platform.adjust(body))["code"] == "INTERNAL_ERROR"
    cancel = await world.platform.cancel(cancellation(LOGIN, body["requestUniqueNo"], "9"))
    assert cancel["code"] == "US_0000002"
    assert await world.platform.wallet(LOGIN) == "1000.00"
    assert_verifies(world.h)


async def test_draining_refuses_new_requests(world: World) -> None:
    """Once the gateway drains, a new settlement request is SERVICE_UNAVAILABLE."""
    world.h.gateway.draining = True
    try:
        answer = await world.platform.adjust(adjustment(LOGIN, "1"))
    finally:
        world.h.gateway.draining = False
    assert answer["code"] == "SERVICE_UNAVAILABLE"
    assert await world.platform.wallet(LOGIN) == "1000.00"


# -- races and concurrency -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
async def test_a_cancel_racing_its_adjustment(world: World, seed: int) -> None:
    """An adjustment and its cancel sent together, in a seeded order and with seeded delays:
    whichever the gateway reads first, the answers agree with that order and the wallet ends
    where it started."""
    rng = random.Random(seed)
    print(f"seed={seed}")
    platform = world.platform
    for _ in range(5):
        body = adjustment(LOGIN, f"{rng.randint(1, 50)}.{rng.randint(0, 99):02d}")
        cancel_body = cancellation(LOGIN, body["requestUniqueNo"], body["amount"])
        adjusting = platform.adjust(body)
        cancelling = platform.cancel(cancel_body)
        if rng.random() < 0.5:  # which request is sent first
            cancel_task = asyncio.ensure_future(cancelling)
            adjust_task = asyncio.ensure_future(adjusting)
        else:
            adjust_task = asyncio.ensure_future(adjusting)
            cancel_task = asyncio.ensure_future(cancelling)
        adjusted, cancelled = await asyncio.gather(adjust_task, cancel_task)
        outcome = (adjusted["code"], cancelled["code"])
        assert outcome in (("0", "0"), ("REQUEST_CANCELLED", "US_0000002")), outcome
        assert await platform.wallet(LOGIN) == "1000.00"
    assert_verifies(world.h)


async def test_two_hundred_identical_adjustments_move_once(world: World) -> None:
    """200 copies of one adjustment at once: one movement, 200 identical answers."""
    body = adjustment(LOGIN, "3.33")
    answers = await asyncio.gather(*(world.platform.adjust(body) for _ in range(200)))
    assert {answer["code"] for answer in answers} == {"0"}
    assert len({orjson.dumps(answer["data"]) for answer in answers}) == 1
    assert await world.platform.wallet(LOGIN) == "996.67"
    assert (await world.tcp.ok("MngGetTradesByFilter", {"login": LOGIN}))["count"] == 2


async def test_a_thousand_adjustments_and_cancels_over_twenty_wallets(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """1,000 concurrent adjustments and cancels over 20 accounts (seeded): every wallet equals
    its start plus what its journal says moved, and the ledger verifies."""
    world = await start(make_gateway, session)
    logins = list(range(3001, 3021))
    await fund(world.tcp, world.h, *logins, credit=100.0)
    rng = random.Random(7)
    requests = []
    for _ in range(800):
        login = rng.choice(logins)
        kind = rng.choices(["OPEN_POSITION", "NORMAL_CLOSE", "ABNORMAL_OVERTRADING"], [7, 2, 1])[0]
        amount = f"{'-' if kind == 'ABNORMAL_OVERTRADING' else ''}{rng.randint(1, 3000) / 100}"
        requests.append(adjustment(login, amount, kind))
    cancels = [
        cancellation(
            int(body["thirdServerCode"]), body["requestUniqueNo"], body["amount"].lstrip("-")
        )
        for body in rng.sample(requests, 200)
    ]
    jobs = [world.platform.adjust(body) for body in requests]
    jobs += [world.platform.cancel(body) for body in cancels]
    rng.shuffle(jobs)
    answers = await asyncio.gather(*jobs)
    assert not {a["code"] for a in answers} - {
        "0", "INSUFFICIENT_FUNDS", "US_0000001", "US_0000002", "REQUEST_CANCELLED",
    }  # fmt: skip
    journal = world.h.gateway.runtime.state.journal
    moved: dict[int, Decimal] = dict.fromkeys(logins, Decimal(0))
    for row in journal.values():
        if row.kind == "adjustment" and row.code == "0" and row.cancelled_by is None:
            moved[int(row.login)] += Decimal(row.amount)  # type: ignore[arg-type]
    for login in logins:
        assert Decimal(await world.platform.wallet(login)) == Decimal(100) + moved[login], login
    assert_verifies(world.h)
    await wait_until(world.tcp, lambda: world.h.gateway.runtime.queue_depth == 0)


# -- the conformance kit and the simulator against the gateway ---------------------------------


@pytest.mark.parametrize("policy", ["deduct_available", "deduct", "ignore"])
async def test_the_conformance_kit_passes_against_the_gateway(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession, policy: str
) -> None:
    """`settlement check`'s cases, run through its library entry point against the real
    listener, all pass under each overtrading policy, and the ledger verifies afterwards."""
    world = await start(make_gateway, session, settlement_overtrading=policy)
    report = await run_kit(KitOptions(url=world.platform.base_url, login=LOGIN, currency="USD"))
    assert report.failed_cases == [], report.summary()
    assert len(report.results) >= 20
    assert_verifies(world.h)


async def test_the_simulator_finds_every_wallet_as_confirmed(world: World) -> None:
    """The platform simulator, closed loop over a few wallets with its cancels, ends with every
    wallet equal to what its confirmed adjustments imply."""
    logins = range(5001, 5006)
    await fund(world.tcp, world.h, *logins, credit=500.0)
    spec = SimulationSpec(
        url=world.platform.base_url, logins=logins, concurrency=20, duration_s=None,
        requests=400, progress=False, seed=3,
    )  # fmt: skip
    result = await run_simulation(spec)
    assert not result.failed, result.summary()
    assert result.mismatches == []
    assert_verifies(world.h)
