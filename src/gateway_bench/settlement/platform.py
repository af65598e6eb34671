"""The platform's requests to an external system, and its reading of the answers.

One `PlatformClient` per run: an `aiohttp.ClientSession` on HTTP/1.1 keep-alive with a pool
sized to the concurrency, and the platform's 3 s budget per request as a total deadline (waiting
for a pooled connection, connecting, sending and reading the whole answer). The session is opened
on the first request, inside the running loop. Every request carries a fresh `trace`, the
`companyId`, a 13-digit ms `timestamp` and, when given, a bearer token; a header mapped to None
in `headers=` is left out, which is how the kit sends requests the platform never would.

Answers come back as `Answer`: HTTP status, envelope `code`, `msg`, `data`, and the `problems`
found in the envelope (trace not echoed, `ok`/`fail` contradicting `code`, ...). Numbers in the
body are parsed into `Decimal`, never floats: the body is read as bytes and parsed here, whatever
its Content-Type says.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from .money import format_amount, parse_amount

ADJUST = "/external-system-credit-limit-adjustment"
CANCEL = "/cancel-external-system-credit-limit-adjustment"
BALANCE = "/get-user-amount"
TRANSFER = "/transfer-to-cp"

SUCCESS = "0"
RECEIVED_NOT_PROCESSED = "US_0000001"  # cancel: the adjustment was refused
NEVER_RECEIVED = "US_0000002"  # cancel: no such adjustment; a tombstone now blocks it
FINAL_CANCEL_CODES = frozenset({SUCCESS, RECEIVED_NOT_PROCESSED, NEVER_RECEIVED})

OPEN_POSITION, NORMAL_CLOSE, ABNORMAL_OVERTRADING = (
    "OPEN_POSITION",
    "NORMAL_CLOSE",
    "ABNORMAL_OVERTRADING",
)
OPERATIONS = (OPEN_POSITION, NORMAL_CLOSE, ABNORMAL_OVERTRADING)
BIZ_TYPE = {OPEN_POSITION: 1, NORMAL_CLOSE: 2, ABNORMAL_OVERTRADING: 2}  # market open / close

PLATFORM_TIMEOUT_S = 3.0  # the platform cancels whatever is not answered within this
KEEPALIVE_S = 5.0  # an idle pooled connection is closed after this
MAX_NUMBER_LENGTH = 48  # requestUniqueNo, txid, userName
USER_IP = "127.0.0.1"


class PlatformError(Exception):
    """A request that got no HTTP answer; `kind` names the reason in outcome tables."""

    kind = "ERROR"


class PlatformTimeout(PlatformError):
    kind = "TIMEOUT"


class PlatformUnreachable(PlatformError):
    kind = "UNREACHABLE"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One adjustment; `amount` carries the platform's sign (negative for ABNORMAL_OVERTRADING)."""

    login: int
    user_name: str
    currency: str
    operation: str
    amount: Decimal
    digits: int
    number: str
    order_id: int

    @property
    def signed(self) -> Decimal:
        """What the adjustment asks to do to the wallet: OPEN_POSITION takes, NORMAL_CLOSE
        gives, ABNORMAL_OVERTRADING takes (its amount is already negative)."""
        if self.operation == OPEN_POSITION:
            return -abs(self.amount)
        return self.amount

    def body(self) -> dict[str, Any]:
        return {
            "thirdServerCode": str(self.login),
            "userName": self.user_name,
            "currency": self.currency,
            "bizType": BIZ_TYPE.get(self.operation, 1),
            "operationType": self.operation,
            "amount": format_amount(self.amount, self.digits),
            "amountDigits": self.digits,
            "orderId": self.order_id,
            "requestUniqueNo": self.number,
            "requestTime": now_ms(),
            "ip": USER_IP,
        }


@dataclass(frozen=True, slots=True)
class Cancel:
    """The platform's cancel of `target`, under its own number."""

    target: Adjustment
    number: str
    remark: str = "timeout"

    def body(self) -> dict[str, Any]:
        target = self.target
        return {
            "thirdServerCode": str(target.login),
            "userName": target.user_name,
            "currency": target.currency,
            "bizType": BIZ_TYPE.get(target.operation, 1),
            "amount": format_amount(abs(target.amount), target.digits),
            "amountDigits": target.digits,
            "orderId": target.order_id,
            "requestUniqueNo": self.number,
            "reverseRequestUniqueNo": target.number,
            "requestTime": now_ms(),
            "ip": USER_IP,
            "cancelRemark": self.remark,
        }


@dataclass(frozen=True, slots=True)
class Transfer:
    """The legacy transfer to CP: credit a net win, idempotent by `txid`."""

    login: int
    currency: str
    amount: Decimal
    digits: int
    txid: str
    remark: str = "net win"

    def body(self) -> dict[str, Any]:
        return {
            "username": str(self.login),
            "currency": self.currency,
            "amount": format_amount(self.amount, self.digits),
            "amountDigist": self.digits,  # sic: the platform's own spelling
            "txid": self.txid,
            "requesttime": now_ms(),
            "ip": USER_IP,
            "remark": self.remark,
        }


def balance_body(login: int, user_name: str, currency: str) -> dict[str, Any]:
    return {"thirdServerCode": str(login), "userName": user_name, "currency": currency}


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: its status and, when the body is the platform's envelope, what it says."""

    route: str
    status: int
    code: str | None  # None when the body is no envelope
    msg: str
    data: dict[str, Any]
    elapsed_s: float
    problems: tuple[str, ...] = field(default=())
    tm_ms: int | None = None  # the envelope's `tm`: how long the server says it took

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.code == SUCCESS

    @property
    def outcome(self) -> str:
        """The code, or `http/<status>` / `bad-envelope` when there is none to read."""
        if self.status != 200:
            return f"http/{self.status}"
        return self.code if self.code is not None else "bad-envelope"

    def amount(self) -> Decimal | None:
        """`data.amount` read exactly, or None when absent; ValueError when unreadable."""
        value = self.data.get("amount")
        return None if value is None else parse_amount(value)


def read_answer(
    route: str, status: int, content: bytes, trace: str | None, elapsed_s: float
) -> Answer:
    """Parse an answer body and note what contradicts the envelope's contract."""
    try:
        body = json.loads(content, parse_float=Decimal)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        problems = () if status != 200 else ("the body is not a JSON object",)
        return Answer(route, status, None, "", {}, elapsed_s, problems)
    problems_found: list[str] = []
    code = body.get("code")
    if not isinstance(code, str):
        problems_found.append(f"code is not a string: {code!r}")
        code = None
    if trace is not None and body.get("trace") != trace:
        problems_found.append(f"trace not echoed: sent {trace!r}, got {body.get('trace')!r}")
    success = code == SUCCESS
    for flag, expected in (("ok", success), ("fail", not success)):
        if flag in body and body[flag] is not expected:
            problems_found.append(f"{flag} is {body[flag]!r} with code {code!r}")
    data = body.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        problems_found.append(f"data is not an object: {data!r}")
        data = {}
    msg = body.get("msg")
    tm = body.get("tm")
    return Answer(
        route,
        status,
        code,
        msg if isinstance(msg, str) else "",
        data,
        elapsed_s,
        tuple(problems_found) if status == 200 else (),
        tm if isinstance(tm, int) and not isinstance(tm, bool) else None,
    )


class PlatformClient:
    """The platform's HTTP client towards one external system at `base_url` (e.g.
    `http://127.0.0.1:8081/api`): one method per route, plus `post` for crafted requests.

    A route is appended to `base_url`'s path. At most `connections` requests are on the wire at
    once; the others wait for a pooled connection, within their own deadline. Redirects are not
    followed. Use it from one event loop; `aclose()` (or leaving `async with`) closes the pool."""

    def __init__(
        self,
        base_url: str,
        *,
        company_id: int | None = 1,
        token: str | None = None,
        timeout_s: float = PLATFORM_TIMEOUT_S,
        connections: int = 10,
    ) -> None:
        self.company_id = company_id
        self.timeout_s = timeout_s
        self._base = base_url.rstrip("/")
        self._connections = connections
        self._token = token
        self._traces = itertools.count(1)
        self._trace_prefix = f"pt-{secrets.token_hex(4)}-"
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._urls: dict[str, str] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        """The session, opened on first use: aiohttp binds it to the running loop."""
        if self._session is None:
            if self._closed:
                raise RuntimeError("the PlatformClient is closed")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._connections, keepalive_timeout=KEEPALIVE_S
                ),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # kept, even from an IP address
            )
        return self._session

    def _url(self, route: str) -> str:
        url = self._urls.get(route)
        if url is None:
            url = self._urls[route] = f"{self._base}/{route.lstrip('/')}"
        return url

    def next_trace(self) -> str:
        return f"{self._trace_prefix}{next(self._traces)}"

    def headers(self) -> dict[str, str]:
        """The headers the platform sends: a fresh trace, companyId, timestamp, bearer token."""
        headers = {"trace": self.next_trace(), "timestamp": str(now_ms())}
        if self.company_id is not None:
            headers["companyId"] = str(self.company_id)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def post(
        self, route: str, body: Any, *, headers: Mapping[str, str | None] | None = None
    ) -> Answer:
        """POST `body` (JSON-encoded unless already bytes) to `route`, with the platform's headers
        changed by `headers` (None removes one). Raises PlatformTimeout past the deadline and
        PlatformUnreachable when no HTTP exchange happened (a header value HTTP forbids, such as
        one with a line break, is refused before sending, also as PlatformUnreachable)."""
        sent = dict(self.headers())
        for name, value in (headers or {}).items():
            if value is None:
                sent.pop(name, None)
            else:
                sent[name] = value
        sent["Content-Type"] = "application/json"
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        http = self._http()
        started = time.perf_counter()
        try:
            async with http.post(
                self._url(route), data=content, headers=sent, allow_redirects=False
            ) as response:
                status, answer = response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            raise PlatformTimeout(f"{route}: no answer within {self.timeout_s:g} s") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise PlatformUnreachable(f"{route}: {type(exc).__name__}: {exc}") from exc
        elapsed = time.perf_counter() - started
        return read_answer(route, status, answer, sent.get("trace"), elapsed)

    async def adjust(self, adjustment: Adjustment) -> Answer:
        return await self.post(ADJUST, adjustment.body())

    async def cancel(self, cancel: Cancel) -> Answer:
        return await self.post(CANCEL, cancel.body())

    async def transfer(self, transfer: Transfer) -> Answer:
        return await self.post(TRANSFER, transfer.body())

    async def balance(self, login: int, user_name: str, currency: str) -> Answer:
        return await self.post(BALANCE, balance_body(login, user_name, currency))
