"""The trading platform's side of External Settlement, for tests: real HTTP to a real listener."""

from __future__ import annotations

import itertools
import time
from typing import Any

import aiohttp

from manager_gateway.settlement.http import ADJUST, AMOUNT, CANCEL, TRANSFER

from .conftest import Client, GatewayFactory, Harness, with_free_port

COMPANY = 1
_NUMBERS = itertools.count(1)


def number(prefix: str = "n") -> str:
    """A request number no other test uses."""
    return f"{prefix}-{next(_NUMBERS)}"


def now_ms() -> int:
    return int(time.time() * 1000)


def adjustment(
    login: int, amount: str, operation: str = "OPEN_POSITION", **fields: Any
) -> dict[str, Any]:
    return {
        "thirdServerCode": str(login),
        "userName": f"user-{login}",
        "currency": "USD",
        "bizType": 1,
        "operationType": operation,
        "amount": amount,
        "amountDigits": 2,
        "orderId": 4242,
        "requestUniqueNo": number("adj"),
        "requestTime": now_ms(),
        "ip": "203.0.113.7",
        **fields,
    }


def cancellation(login: int, reverses: str, amount: str, **fields: Any) -> dict[str, Any]:
    return {
        "thirdServerCode": str(login),
        "userName": f"user-{login}",
        "currency": "USD",
        "bizType": 1,
        "amount": amount,
        "amountDigits": 2,
        "requestUniqueNo": number("cxl"),
        "reverseRequestUniqueNo": reverses,
        "requestTime": now_ms(),
        "ip": "203.0.113.7",
        "cancelRemark": "timeout",
        **fields,
    }


def transfer(login: int, amount: str, **fields: Any) -> dict[str, Any]:
    return {
        "username": str(login),
        "currency": "USD",
        "amount": amount,
        "amountDigist": 2,
        "txid": number("tx"),
        "requesttime": now_ms(),
        "ip": "203.0.113.7",
        "remark": "net win",
        **fields,
    }


class Platform:
    """Posts to the settlement routes with the platform's headers; answers parsed."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.session = session
        self._traces = itertools.count(1)

    def headers(self, **overrides: str | None) -> dict[str, str]:
        headers: dict[str, str | None] = {
            "trace": f"trace-{next(self._traces)}",
            "companyId": str(COMPANY),
            "timestamp": str(now_ms()),
            **overrides,
        }
        return {name: value for name, value in headers.items() if value is not None}

    async def raw(
        self, route: str, body: bytes, headers: dict[str, str] | None = None, method: str = "POST"
    ) -> tuple[int, Any]:
        """One request with a raw body; (HTTP status, parsed JSON or text)."""
        async with self.session.request(
            method, f"{self.base_url}/{route}", data=body,
            headers=headers if headers is not None else self.headers(),
        ) as response:  # fmt: skip
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def post(
        self, route: str, body: dict[str, Any], **header_overrides: str | None
    ) -> dict[str, Any]:
        """One request; its envelope (asserting HTTP 200 and the trace echo)."""
        headers = self.headers(**header_overrides)
        async with self.session.post(
            f"{self.base_url}/{route}", json=body, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json()
        assert answer["trace"] == headers.get("trace", "")
        assert answer["ok"] is (answer["code"] == "0") and answer["fail"] is not answer["ok"]
        return answer

    async def adjust(self, body: dict[str, Any], **headers: str | None) -> dict[str, Any]:
        return await self.post(ADJUST, body, **headers)

    async def cancel(self, body: dict[str, Any], **headers: str | None) -> dict[str, Any]:
        return await self.post(CANCEL, body, **headers)

    async def transfer(self, body: dict[str, Any], **headers: str | None) -> dict[str, Any]:
        return await self.post(TRANSFER, body, **headers)

    async def wallet(self, login: int, currency: str = "USD") -> str:
        answer = await self.post(
            AMOUNT, {"thirdServerCode": str(login), "userName": "u", "currency": currency}
        )
        assert answer["code"] == "0", answer
        amount: str = answer["data"]["amount"]
        return amount


async def settlement_gateway(make_gateway: GatewayFactory, **settings: Any) -> Harness:
    """A gateway with its settlement listener on a port that was free a moment ago."""
    return await with_free_port(make_gateway, "settlement_port", **settings)


def base_url(h: Harness, prefix: str = "/api") -> str:
    return f"http://127.0.0.1:{h.gateway.settlement_port}{prefix}"


async def fund(client: Client, h: Harness, *logins: int, credit: float = 1000.0) -> None:
    """Create each account in group demo with `credit` in its wallet."""
    for login in logins:
        await h.add_user(client, login)
        await client.ok("CreditIn", {"login": login, "amount": credit, "comment": "seed"})
