"""A seeded fuzzer against every settlement route of one real gateway, invariants per request.

Each hypothesis example is a batch: one request per route of BATCH in a drawn order (and now and
then one off the routes), each a valid platform body (adjustment, cancel, transfer, amount query)
with fresh or reused numbers, then field-level mutations (a field dropped, a wrong type, edge
amounts, overlong or odd strings, nesting), byte-level ones (duplicate keys, non-JSON, empty,
oversize) and header ones (trace, companyId, timestamp, bearer token missing or garbage). The edge
tables of amounts and companyIds are also walked in order, so every edge value is sent. After each
request the wallets, balances and finance records are read back and compared with what the answer
says happened: a refusal moved nothing, a `0` moved exactly what its `data` says (once: its replay
moves nothing). Hypothesis runs in a worker thread and hands each request to the test's event
loop, as in test_fuzz.py.

Reproduce a run with `SETTLEMENT_FUZZ_SEED=<n>`; the default is fixed. Shrinking is off: the
examples run against one evolving gateway, so the failure message carries the request instead;
what the fuzzer found is kept below it as minimal requests.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from manager_gateway.ledger.verify import verify_ledger
from manager_gateway.settlement.codes import Code
from manager_gateway.settlement.http import ADJUST, AMOUNT, CANCEL, MAX_BODY_BYTES, TRANSFER

from ..conftest import Client, GatewayFactory, Harness, ledger, wait_until
from ..platform import (
    Platform,
    adjustment,
    base_url,
    cancellation,
    fund,
    now_ms,
    settlement_gateway,
    transfer,
)
from .test_fuzz import RAW_FRAGMENTS, Raw, serialize, weird_values

FUZZ_SEED = int(os.environ.get("SETTLEMENT_FUZZ_SEED", "20260316"))
EXAMPLES = 80  # hypothesis examples; each one is a batch
CLOSED = 1003  # group vip: not open to settlement
WALLETS = {1001: "USD", 1002: "USD", 1004: "EUR"}  # groups demo, demo, eur: open to settlement
LOGINS = (*WALLETS, CLOSED)
START = Decimal("1000.00")  # each account's credit (the wallet) before the fuzzing
BALANCE = Decimal("50.00")  # each account's balance: settlement never touches it
ENVELOPE = {"code", "msg", "msgParams", "tm", "trace", "bizCode", "data", "ok", "fail"}
CODES = {str(code) for code in Code}
OPERATIONS = ("OPEN_POSITION", "NORMAL_CLOSE", "ABNORMAL_OVERTRADING")
ROUTES = (ADJUST, CANCEL, TRANSFER, AMOUNT)
BATCH = (ADJUST, ADJUST, CANCEL, CANCEL, TRANSFER, AMOUNT)  # the routes of one example
#: What a fuzzed `amount` may become (Raw: spliced into the JSON as is).
AMOUNTS: tuple[Any, ...] = (
    "NaN", "Infinity", "-Infinity", "sNaN", "1e999999", "1e1000000", "-1E+999999999",
    "1e-999999999999", "1e99999999999999999999", "1E+2", "1e2", "1e-2", "1E-8", "0", "-0",
    "0.00", "1000000000", "1000000000.00", "1000000000.01", "-1000000000.01", "12.345", "5.",
    ".5", "+5", " 5 ", "1_000", "\u0661\u0662", "0x10", "", "1,5", "5e", "--5", "12.50",
    12.5, 0.1, 0, -0.0, 1e9, 1e-9, 2**63, 10**30, -(10**30), True, None, [], {"value": "5"},
    Raw(b"1e400"), Raw(b"NaN"), Raw(b"-Infinity"), Raw(b"0.30000000000000004"),
    Raw(b"9" * 400), Raw(b"1E+999999999"), Raw(b"-0.0"),
)  # fmt: skip
TOKEN = "fuzz-token"
AUTHORIZATIONS = ("Bearer wrong", "Bearer", f"bearer {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "")
COMPANY_HEADERS = (
    "1", "2", "3", "", "abc", "-1", " 1 ", "1.0", "0", "0x1", "\u0661", "9" * 25,
    "9223372036854775807", "-9223372036854775808", "9223372036854775808", "9" * 19,
)  # fmt: skip
TRACES = ("", "t" * 200, "tr\u00e2ce", "trace with spaces", "0")
#: Timestamp header: an int is an offset from now in ms; a str is sent as is.
TIMESTAMPS: tuple[int | str, ...] = (
    0, -299_000, 299_000, -600_000, 600_000, "abc", "", "123", "9" * 25, "1.5e12", "-1",
)  # fmt: skip
#: Requests off the routes and their HTTP status.
OFF_ROUTE = {
    ("POST", "no-such-route"): 404,
    ("POST", ADJUST.upper()): 404,
    ("GET", ADJUST): 405,
    ("PUT", CANCEL): 405,
    ("GET", "openapi.json"): 200,
}
NON_JSON = (b"", b"{", b"null", b"[]", b"1", b'"x"', b"\xff\xfe", b"{}", b"{,}", b"\xef\xbb\xbf{}")

NO_EDGE = object()  # no edge value for this request

_NUMBERS = itertools.count(1)


@dataclass
class Fuzzed:
    """One request to send: route, body bytes, header plan, and a label for the failure text."""

    method: str
    path: str  # under the settlement prefix
    body: bytes
    trace: str | None
    company: str | None
    timestamp: int | str | None
    label: list[str] = field(default_factory=list)
    authorization: str | None = f"Bearer {TOKEN}"

    def headers(self) -> dict[str, str]:
        headers = {
            "trace": self.trace, "companyId": self.company, "Authorization": self.authorization
        }  # fmt: skip
        if isinstance(self.timestamp, int):
            headers["timestamp"] = str(now_ms() + self.timestamp)
        else:
            headers["timestamp"] = self.timestamp
        return {name: value for name, value in headers.items() if value is not None}

    @property
    def route(self) -> str | None:
        return self.path if self.method == "POST" and self.path in ROUTES else None


@dataclass(frozen=True)
class Books:
    """What the gateway holds, read back after every request."""

    wallets: dict[int, str]  # /get-user-amount, exact
    money: dict[int, tuple[float, float]]  # GetUserBalanceList: (balance, credit)
    records: int  # finance records (MngGetTradesByFilter count)
    deleted: int  # of which deleted (reversed)


class Fuzzer:
    """The corpus, the mutations, the client, and the checks around one running gateway."""

    def __init__(self, h: Harness, http: aiohttp.ClientSession, tcp: Client) -> None:
        self.h, self.http, self.tcp = h, http, tcp
        self.url = base_url(h)
        self.numbers: dict[str, list[str]] = {}  # the numbers drawn so far, by kind
        self.bodies: dict[str, list[dict[str, Any]]] = {route: [] for route in ROUTES}
        self.created: set[int] = set()  # orders made by an answered adjustment or transfer
        self.reversed: set[int] = set()  # orders reversed by an answered cancel
        self.answers: collections.Counter[tuple[str, str]] = collections.Counter()
        self.replays = 0  # code 0 answers that moved nothing because they were seen before
        self.books: Books | None = None
        self.sent = 0
        self.batches = 0

    # -- drawing --------------------------------------------------------------------------------

    def number(self, draw: st.DrawFn, prefix: str) -> str:
        """A fresh number, or (one time in four) one drawn before: mostly of the same kind
        (`prefix`), sometimes of any kind (a cancel's number sent as an adjustment's)."""
        reuse, anywhere = draw(st.integers(0, 3)), draw(st.integers(0, 9))
        index = draw(st.integers(0, 99))
        pool = self.numbers.setdefault(prefix, [])
        if reuse == 0 and anywhere == 0:
            everything = sorted(itertools.chain.from_iterable(self.numbers.values()))
            return everything[index % len(everything)] if everything else f"{prefix}-0"
        if reuse == 0 and pool:
            return pool[-1 - index % len(pool)]
        number = f"{prefix}-{next(_NUMBERS)}"
        pool.append(number)
        return number

    def valid_body(self, draw: st.DrawFn, route: str) -> dict[str, Any]:
        """A valid body for `route`: fresh, or (sometimes) one sent before, resent as it was.

        The same draws happen either way: what is drawn must not depend on the gateway's state
        (hypothesis checks that its data generation is consistent)."""
        fresh = self.fresh_body(draw, route)
        resend, index = draw(st.integers(0, 4)) == 0, draw(st.integers(0, 99))
        earlier = self.bodies[route]
        return dict(earlier[-1 - index % len(earlier)]) if resend and earlier else fresh

    def fresh_body(self, draw: st.DrawFn, route: str) -> dict[str, Any]:
        login = draw(st.sampled_from((1001, 1002) * 3 + (1004, CLOSED, 999_999)))
        other_currency = draw(st.integers(0, 7)) == 0
        currency = WALLETS.get(login, "USD")
        if other_currency:
            currency = "USD" if currency == "EUR" else "EUR"
        cents = draw(st.sampled_from((1, 99, 1250, 50_000, 99_999, 250_000, 1_000_000, 10**8)))
        amount = f"{cents // 100}.{cents % 100:02d}"
        common = {"currency": currency, "amountDigits": 2, "ip": "203.0.113.7"}
        if route == AMOUNT:
            return {"thirdServerCode": str(login), "userName": "u", "currency": currency}
        if route == TRANSFER:
            return {
                "username": str(login), "amount": amount, "amountDigist": 2,
                "txid": self.number(draw, "tx"), "requesttime": now_ms(), "remark": "win",
                **common,
            }  # fmt: skip
        body = {
            "thirdServerCode": str(login), "userName": f"user-{login}", "bizType": 1,
            "amount": amount, "orderId": draw(st.integers(1, 10**6)), "requestTime": now_ms(),
            **common,
        }  # fmt: skip
        if route == ADJUST:
            operation = draw(st.sampled_from(OPERATIONS))
            body["operationType"] = operation
            body["amount"] = ("-" if operation == "ABNORMAL_OVERTRADING" else "") + amount
            body["requestUniqueNo"] = self.number(draw, "adj")
            return body
        body["requestUniqueNo"] = self.number(draw, "cxl")
        target, index = draw(st.integers(0, 3)), draw(st.integers(0, 99))
        adjusted = [earlier["requestUniqueNo"] for earlier in self.bodies[ADJUST]]
        if target > 1 and adjusted:  # mostly an adjustment sent before
            body["reverseRequestUniqueNo"] = adjusted[-1 - index % len(adjusted)]
        else:  # or any number seen, or a fresh one (a tombstone)
            body["reverseRequestUniqueNo"] = self.number(draw, "adj")
        body["cancelRemark"] = "timeout"
        return body

    def draw_batch(self, draw: st.DrawFn) -> list[Fuzzed]:
        """One example: a request for each route of BATCH in a drawn order, and now and then
        one off the routes.

        The edge tables are also walked in order, whatever hypothesis draws, so every edge value
        is sent: the batch's first request that moves money gets the next AMOUNTS value, and its
        first request the next COMPANY_HEADERS value (the draws stay independent of state)."""
        self.batches += 1
        routes = draw(st.permutations(BATCH))
        mover = next(index for index, route in enumerate(routes) if route != AMOUNT)
        edge_amount = AMOUNTS[self.batches % len(AMOUNTS)]
        batch = [
            self.draw_request(draw, route, edge_amount if index == mover else NO_EDGE)
            for index, route in enumerate(routes)
        ]
        batch[0].company = COMPANY_HEADERS[self.batches % len(COMPANY_HEADERS)]
        batch[0].label.append(f"edge companyId={batch[0].company!r}")
        if draw(st.integers(0, 9)) == 0:
            method, path = draw(st.sampled_from(sorted(OFF_ROUTE)))
            batch.append(Fuzzed(method, path, b"{}", "t", "1", 0, [f"{method} {path}"]))
        return batch

    def draw_request(self, draw: st.DrawFn, route: str, edge_amount: Any = NO_EDGE) -> Fuzzed:
        body = self.valid_body(draw, route)
        if route != AMOUNT and draw(st.integers(0, 1)) == 0:
            self.bodies[route].append(dict(body))
        label = [route]
        if edge_amount is not NO_EDGE:
            body["amount"] = edge_amount
            label.append(f"edge amount={edge_amount!r}"[:60])
        for _ in range(draw(st.sampled_from((0,) * 6 + (1, 1, 2, 3)))):
            label.append(mutate_body(draw, body))
        raw = serialize(body, ascii_only=draw(st.booleans()))
        if draw(st.integers(0, 9)) == 0:
            raw, what = mutate_bytes(draw, raw)
            label.append(what)
        fuzzed = Fuzzed("POST", route, raw, f"trace-{next(_NUMBERS)}", "1", 0, label)
        for _ in range(draw(st.sampled_from((0,) * 7 + (1, 2)))):
            label.append(mutate_headers(draw, fuzzed))
        return fuzzed

    # -- running and checking -------------------------------------------------------------------

    async def read_books(self) -> Books:
        wallets = {}
        for login, currency in WALLETS.items():
            answer = await self.post(
                AMOUNT, {"thirdServerCode": str(login), "userName": "u", "currency": currency}
            )
            assert answer["code"] == "0", answer
            wallets[login] = answer["data"]["amount"]
        rows = (await self.tcp.ok("GetUserBalanceList", {"logins": list(LOGINS)}))["rows"]
        money = {row["login"]: (row["balance"], row["credit"]) for row in rows}
        listed = await self.tcp.ok("MngGetTradesByFilter", {"limit": 50_000})
        deleted = sum(row["state"] == 6 for row in listed["rows"])
        return Books(wallets, money, listed["count"], deleted)

    async def post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "trace": "books", "companyId": "1", "timestamp": str(now_ms()),
            "Authorization": f"Bearer {TOKEN}",
        }  # fmt: skip
        async with self.http.post(f"{self.url}/{route}", json=body, headers=headers) as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
            return answer

    async def run(self, fuzzed: Fuzzed) -> None:
        """Send one request, then check its answer against the books before and after it."""
        if self.books is None:
            self.books = await self.read_books()
        before = self.books
        headers = fuzzed.headers()
        self.sent += 1
        async with self.http.request(
            fuzzed.method, f"{self.url}/{fuzzed.path}", data=fuzzed.body, headers=headers
        ) as response:
            status, text = response.status, await response.read()
        after = self.books = await self.read_books()

        def fail(why: str) -> None:
            raise AssertionError(
                f"SETTLEMENT_FUZZ_SEED={FUZZ_SEED} request {self.sent}: {why}\n"
                f"  {fuzzed.method} {fuzzed.path} headers={headers!r}\n"
                f"  body={fuzzed.body[:600]!r} ({len(fuzzed.body)} bytes; {fuzzed.label})\n"
                f"  answer {status} {text[:600]!r}\n  books {before} -> {after}"
            )

        route = fuzzed.route
        if route is None or len(fuzzed.body) > MAX_BODY_BYTES:
            expected = 413 if route is not None else OFF_ROUTE[(fuzzed.method, fuzzed.path)]
            self.answers[(fuzzed.label[0], str(status))] += 1
            if status != expected or after != before:
                fail(f"expected HTTP {expected} and nothing moved")
            return
        if status != 200:
            fail("not HTTP 200")
        try:
            answer = orjson.loads(text)
        except orjson.JSONDecodeError:
            fail("the answer is not JSON")
        code = answer.get("code") if isinstance(answer, dict) else None
        self.answers[(route, str(code))] += 1
        if set(answer) != ENVELOPE or code not in CODES or code == Code.INTERNAL_ERROR:
            fail("not the envelope, or a code outside the table, or INTERNAL_ERROR")
        if code == Code.SERVICE_UNAVAILABLE:
            fail("SERVICE_UNAVAILABLE: a request was not decided within the budget")
        if (answer["ok"], answer["fail"]) != (code == "0", code != "0") or not answer["msg"]:
            fail("ok/fail disagree with the code, or no msg")
        if answer["trace"] != headers.get("trace", "").strip(" \t"):
            fail("the trace header is not echoed")
        if answer["bizCode"] != "settlement" or not isinstance(answer["data"], dict):
            fail("bizCode or data")
        problem = self.moved_as_answered(route, answer, before, after)
        if problem:
            fail(problem)

    def moved_as_answered(
        self, route: str, answer: dict[str, Any], before: Books, after: Books
    ) -> str | None:
        """What is wrong with the books' change given the answer, or None."""
        data, code = answer["data"], answer["code"]
        if after != before and (code != "0" or route == AMOUNT or data.get("order") is None):
            return "a refusal (or a query, or a no-op) moved something"
        answered_wallet = data.get("amount"), data.get("amountDigits")
        if (route, code) == (AMOUNT, "0") and answered_wallet[0] not in before.wallets.values():
            return f"answered {answered_wallet}, the wallets hold {before.wallets}"
        if (route, code) == (AMOUNT, "0") and answered_wallet[1] != 2:
            return f"answered {answered_wallet}: amountDigits is the currency's 2"
        if code != "0" or route == AMOUNT or data.get("order") is None:
            return None
        order = data["order"]
        seen = self.reversed if route == CANCEL else self.created
        if order in seen:
            self.replays += 1
            return None if after == before else "a replay moved something"
        seen.add(order)
        moved = {
            login: Decimal(after.wallets[login]) - Decimal(before.wallets[login])
            for login in WALLETS
            if after.wallets[login] != before.wallets[login]
        }
        if len(moved) != 1 or next(iter(moved.values())) != Decimal(data["amount"]):
            return f"moved {moved}, answered {data['amount']}"
        (login,) = moved
        if after.wallets[login] != data["walletAmount"]:
            return f"wallet {after.wallets[login]}, answered {data['walletAmount']}"
        others = {k: v for k, v in after.money.items() if k != login}
        if others != {k: v for k, v in before.money.items() if k != login}:
            return "another account's money moved"
        if after.money[login][0] != before.money[login][0]:
            return "the balance moved (the wallet is the credit)"
        new, deleted = (0, 1) if route == CANCEL else (1, 0)
        if (after.records - before.records, after.deleted - before.deleted) != (new, deleted):
            return f"records {before.records}/{before.deleted} -> {after.records}/{after.deleted}"
        return None


def mutate_body(draw: st.DrawFn, body: dict[str, Any]) -> str:
    """One field-level mutation of `body`, in place; what it did."""
    keys = sorted(body)
    kind = draw(st.integers(0, 9))
    name = draw(st.sampled_from(keys)) if keys else "amount"
    if kind == 0 and keys:
        del body[name]
        return f"drop {name}"
    if kind == 1:
        body[name] = draw(weird_values())
        return f"weird {name}"
    if kind in (2, 3):
        body["amount"] = draw(st.sampled_from(AMOUNTS))
        return f"amount={body['amount']!r}"[:60]
    if kind == 4:
        body[name] = draw(st.sampled_from(("x" * 49, "y" * 65, "z" * 201, "w" * 10_000)))
        return f"long {name}"
    if kind == 5:
        body[name] = draw(st.text(min_size=1, max_size=20))
        return f"text {name}"
    if kind == 6:
        body[name] = {"value": body.get(name)} if draw(st.booleans()) else [body.get(name)]
        return f"nest {name}"
    if kind == 7:
        body["amountDigits"] = draw(st.sampled_from((0, 1, 8, 9, -1, "2", 2.0, True, 10**20)))
        return f"amountDigits={body['amountDigits']!r}"
    if kind == 8:
        body[draw(st.sampled_from(("Amount", "extra", "amount_digits", "REQUESTUNIQUENO")))] = 1
        return "extra field"
    wrapped = dict(body)
    body.clear()
    body["data"] = wrapped
    return "wrapped"


def mutate_bytes(draw: st.DrawFn, raw: bytes) -> tuple[bytes, str]:
    """One byte-level mutation of a serialized body; what it did."""
    kind = draw(st.integers(0, 6))
    if kind == 0 and raw.endswith(b"}") and len(raw) > 2:  # a duplicate key, last one wins
        name = draw(st.sampled_from((b"amount", b"requestUniqueNo", b"currency", b"txid")))
        value = draw(st.sampled_from((b'"-5"', b'"7.00"', b'"x"', b"null", *RAW_FRAGMENTS[:8])))
        return raw[:-1] + b',"' + name + b'":' + value + b"}", f"duplicate {name.decode()}"
    if kind == 1:
        return draw(st.sampled_from(NON_JSON)), "not JSON"
    if kind == 2:
        return draw(st.binary(max_size=64)), "random bytes"
    if kind == 3:
        return raw[: draw(st.integers(0, 1024)) * len(raw) // 1024], "truncated"
    if kind == 4:  # a 64 KiB body each time, but byte-level mutations are rare
        return raw[:-1] + b',"pad":"' + b"p" * MAX_BODY_BYTES + b'"}', "oversize"
    if kind == 5:
        return b"[" + raw + b"]", "in an array"
    return raw + raw, "two objects"


def mutate_headers(draw: st.DrawFn, fuzzed: Fuzzed) -> str:
    """One header mutation; what it did."""
    which = draw(st.sampled_from(("trace", "companyId", "timestamp", "authorization")))
    missing = draw(st.integers(0, 3)) == 0
    if which == "trace":
        fuzzed.trace = None if missing else draw(st.sampled_from(TRACES))
        return f"trace={fuzzed.trace!r}"[:40]
    if which == "authorization":
        fuzzed.authorization = None if missing else draw(st.sampled_from(AUTHORIZATIONS))
        return f"authorization={fuzzed.authorization!r}"[:40]
    if which == "companyId":
        fuzzed.company = None if missing else draw(st.sampled_from(COMPANY_HEADERS))
        return f"companyId={fuzzed.company!r}"[:40]
    fuzzed.timestamp = None if missing else draw(st.sampled_from(TIMESTAMPS))
    return f"timestamp={fuzzed.timestamp!r}"[:40]


async def start(make_gateway: GatewayFactory) -> tuple[Harness, Client]:
    """The gateway with settlement on for groups demo and eur, any company, a bearer token, and
    the accounts, each with START of credit and BALANCE of balance."""
    groups = [
        {"name": "demo", "currency": "USD", "digits": 2},
        {"name": "vip", "currency": "USD", "digits": 2},
        {"name": "eur", "currency": "EUR", "digits": 2},
    ]
    h = await settlement_gateway(
        make_gateway,
        groups=groups,
        settlement_groups=("demo", "eur"),
        settlement_token=TOKEN,
    )
    tcp = await h.client()
    for login, group in ((1001, "demo"), (1002, "demo"), (CLOSED, "vip"), (1004, "eur")):
        await h.add_user(tcp, login, group=group)
        await tcp.ok("CreditIn", {"login": login, "amount": float(START), "comment": "seed"})
        await tcp.ok("BalanceIn", {"login": login, "amount": float(BALANCE)})
    return h, tcp


async def test_fuzzed_settlement_requests_break_no_invariant(make_gateway: GatewayFactory) -> None:
    """Mutated platform requests on every route: HTTP 200 with the envelope and a code from the
    table (413/404/405 off the routes), never INTERNAL_ERROR; refusals move nothing; a `0` moves
    what it says once; wallets equal the journal; the ledger verifies."""
    print(f"SETTLEMENT_FUZZ_SEED={FUZZ_SEED}")
    h, tcp = await start(make_gateway)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        fuzzer = Fuzzer(h, http, tcp)

        @seed(FUZZ_SEED)
        @settings(
            max_examples=EXAMPLES,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def fuzz(data: st.DataObject) -> None:
            for request in fuzzer.draw_batch(data.draw):
                asyncio.run_coroutine_threadsafe(fuzzer.run(request), loop).result()

        await asyncio.to_thread(fuzz)
        books = await fuzzer.read_books()

    codes = collections.Counter[str]()
    for (_, code), count in fuzzer.answers.items():
        codes[code] += count
    print(f"fuzz: {fuzzer.sent} requests, {fuzzer.replays} replays that moved nothing")
    print(f"fuzz: codes {dict(codes.most_common())}")
    print(f"fuzz: by route {dict(sorted(fuzzer.answers.items()))}")

    # Each wallet is its start plus the journal's net movement; the ledger verifies.
    net = dict.fromkeys(LOGINS, Decimal(0))
    for row in h.gateway.runtime.state.journal.values():
        if row.code == "0" and row.login is not None:
            net[row.login] += Decimal(row.amount)
    assert {login: Decimal(books.wallets[login]) for login in WALLETS} == {
        login: START + net[login] for login in WALLETS
    }
    assert net[CLOSED] == 0
    problems, summary = verify_ledger(h.data_dir)
    assert problems == [], f"SETTLEMENT_FUZZ_SEED={FUZZ_SEED}: {problems} ({summary})"

    # The fuzzer reached the decision logic: successes on every route, replays, and refusals of
    # many kinds, the stateful ones (funds, duplicates, tombstones) included.
    assert fuzzer.sent >= EXAMPLES * len(BATCH)
    assert all(fuzzer.answers[(route, "0")] >= EXAMPLES // 10 for route in ROUTES), fuzzer.answers
    assert codes["0"] >= fuzzer.sent // 10 and fuzzer.replays > 0
    assert codes["INVALID_PARAMETER"] >= fuzzer.sent // 10
    reached = {
        "ACCOUNT_NOT_FOUND", "CURRENCY_MISMATCH", "INSUFFICIENT_FUNDS",
        "DUPLICATE_REQUEST_MISMATCH", "REQUEST_EXPIRED", "FORBIDDEN", "US_0000001", "US_0000002",
        "413", "404", "405",
    }  # fmt: skip
    assert reached <= set(codes), set(codes)


# -- what the fuzzer found, as minimal requests ------------------------------------------------


async def regression_world(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, **settings: Any
) -> tuple[Harness, Client, Platform]:
    """A gateway with settlement on and account 1001 holding 1000.00 of credit."""
    h = await settlement_gateway(make_gateway, **settings)
    tcp = await h.client()
    await fund(tcp, h, 1001)
    return h, tcp, Platform(base_url(h), http)


def minimal(route: str, amount: str, reverses: str = "adj-none") -> dict[str, Any]:
    """The smallest valid body for `route` on account 1001 with `amount`."""
    if route == ADJUST:
        return adjustment(1001, amount)
    if route == CANCEL:
        return cancellation(1001, reverses, amount)
    return transfer(1001, amount)


@pytest.mark.parametrize("company", ["9223372036854775808", "9999999999999999999"])
@pytest.mark.parametrize("route", [ADJUST, CANCEL, TRANSFER])
async def test_a_company_id_beyond_int64_is_invalid(
    make_gateway: GatewayFactory, route: str, company: str
) -> None:
    """A companyId header of 19 digits above 2**63 - 1 (the ledger's INTEGER) is refused as
    INVALID_PARAMETER like any other bad integer header, not answered INTERNAL_ERROR."""
    async with aiohttp.ClientSession() as http:
        _, _, platform = await regression_world(make_gateway, http)
        answer = await platform.post(route, minimal(route, "1.00"), companyId=company)
        assert answer["code"] == "INVALID_PARAMETER", answer
        assert await platform.wallet(1001) == "1000.00"


async def test_a_bad_company_id_does_not_fail_its_neighbours(make_gateway: GatewayFactory) -> None:
    """A request with an out-of-range companyId, decided in one ledger batch with a valid
    adjustment and another session's CreditInSync, must not make their commit fail: both are
    applied (today the whole batch is answered INTERNAL_ERROR / 500)."""
    async with aiohttp.ClientSession() as http:
        h, tcp, platform = await regression_world(make_gateway, http, gated=True)
        probe, gated = await h.client(), ledger(h)
        gated.commit_started.clear()
        gated.hold()
        first = asyncio.ensure_future(platform.adjust(adjustment(1001, "1.00")))
        await wait_until(probe, gated.commit_started.is_set)  # `first` holds the ledger
        bad = asyncio.ensure_future(
            platform.adjust(adjustment(1001, "2.00"), companyId="9999999999999999999")
        )
        await wait_until(probe, lambda: bad.done() or h.gateway.runtime.queue_depth == 1)
        queued = h.gateway.runtime.queue_depth
        good = asyncio.ensure_future(platform.adjust(adjustment(1001, "3.00")))
        credit = tcp.send("CreditInSync", {"login": 1001, "amount": 5.0, "comment": "other"})
        await wait_until(probe, lambda: h.gateway.runtime.queue_depth == queued + 2)
        gated.release()  # the next batch: bad (if it was queued), good and credit together
        assert (await first)["code"] == "0"
        assert (await good)["code"] == "0"
        assert (await asyncio.wait_for(credit, 10))["status"] == 200
        assert (await bad)["code"] == "INVALID_PARAMETER"
        assert await platform.wallet(1001) == "1001.00"  # 1000 - 1 - 3 + 5


@pytest.mark.parametrize(
    ("route", "amount"),
    [
        (ADJUST, "1e1000000"),
        (CANCEL, "1e1000000"),
        (TRANSFER, "1E+999999999"),
        (ADJUST, "1e-999999999999"),
        (CANCEL, "1e-999999999999"),
        (TRANSFER, "1e-999999999999"),
    ],
)
async def test_amounts_outside_the_decimal_range_are_invalid(
    make_gateway: GatewayFactory, route: str, amount: str
) -> None:
    """An amount whose exponent is beyond Python's decimal context (too big: the validator's
    `abs` overflows; too small: `normalize` underflows to 0 decimals) is INVALID_PARAMETER and
    moves nothing. A cancel is tried against an applied adjustment, so accepting it would
    reverse it."""
    async with aiohttp.ClientSession() as http:
        _, tcp, platform = await regression_world(make_gateway, http)
        applied = adjustment(1001, "10.00")
        assert (await platform.adjust(applied))["code"] == "0"
        records = (await tcp.ok("MngGetTradesByFilter", {"login": 1001}))["rows"]
        answer = await platform.post(
            route, minimal(route, amount, reverses=applied["requestUniqueNo"])
        )
        assert answer["code"] == "INVALID_PARAMETER", answer
        assert await platform.wallet(1001) == "990.00"
        assert (await tcp.ok("MngGetTradesByFilter", {"login": 1001}))["rows"] == records
