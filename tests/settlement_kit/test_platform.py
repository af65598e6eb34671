"""The platform's requests and its reading of the envelope, against a real HTTP wallet."""

from __future__ import annotations

import asyncio
import socket
import time
from decimal import Decimal

import pytest

from gateway_bench.settlement.platform import (
    ADJUST,
    BALANCE,
    Adjustment,
    Cancel,
    PlatformClient,
    PlatformTimeout,
    PlatformUnreachable,
    Transfer,
    read_answer,
)

from .conftest import KIT_LOGIN
from .wallet_server import WalletServer, serving
from .wallets import Faults, Wallet


def adjustment(
    operation: str = "OPEN_POSITION", amount: str = "1.25", number: str = "n-1"
) -> Adjustment:
    return Adjustment(KIT_LOGIN, "u1", "USD", operation, Decimal(amount), 2, number, 42)


def test_bodies_follow_the_seeds() -> None:
    """Adjustment, cancel and transfer bodies carry the platform's field names and signs."""
    body = adjustment("ABNORMAL_OVERTRADING", "-3.5").body()
    assert (body["amount"], body["amountDigits"], body["thirdServerCode"]) == ("-3.50", 2, "7001")
    assert len(str(body["requestTime"])) == 13
    assert adjustment().signed == Decimal("-1.25")
    assert adjustment("NORMAL_CLOSE").signed == Decimal("1.25")
    cancel = Cancel(adjustment("ABNORMAL_OVERTRADING", "-3.5"), "n-1-c").body()
    assert (cancel["amount"], cancel["reverseRequestUniqueNo"]) == ("3.50", "n-1")
    assert "operationType" not in cancel
    transfer = Transfer(KIT_LOGIN, "USD", Decimal(2), 2, "tx-1").body()
    assert (transfer["username"], transfer["amount"], transfer["amountDigist"]) == (
        "7001",
        "2.00",
        2,
    )


def test_envelope_reading_notes_contract_problems() -> None:
    """A wrong trace echo, contradicting ok/fail flags and a non-object data are problems."""
    good = (
        b'{"code":"0","msg":"success","trace":"t1","data":{"amount":0.10},"ok":true,"fail":false}'
    )
    answer = read_answer(ADJUST, 200, good, "t1", 0.01)
    assert answer.ok and not answer.problems and answer.amount() == Decimal("0.10")
    bad = b'{"code":"0","trace":"other","data":[],"ok":false,"fail":true}'
    problems = read_answer(ADJUST, 200, bad, "t1", 0.01).problems
    assert [p.split(":")[0].split(" ")[0] for p in problems] == ["trace", "ok", "fail", "data"]
    assert read_answer(ADJUST, 200, b"<html>", "t1", 0.01).outcome == "bad-envelope"
    refused = read_answer(ADJUST, 400, b"{}", "t1", 0.01)
    assert (refused.outcome, refused.problems, refused.ok) == ("http/400", (), False)


async def test_headers_sent_on_every_request(reference: WalletServer) -> None:
    """A fresh trace, companyId, a 13-digit timestamp and the bearer token on each request."""
    async with PlatformClient(reference.url, company_id=77, token="s3cret") as client:
        first = await client.balance(KIT_LOGIN, "u1", "USD")
        await client.adjust(adjustment())
    assert first.ok and first.data["amount"] == "1000.00"
    (path1, headers1), (path2, headers2) = reference.wallet.seen
    assert (path1, path2) == ("/api" + BALANCE, "/api" + ADJUST)
    assert headers1["trace"] != headers2["trace"]
    assert headers1["companyid"] == "77" and len(headers1["timestamp"]) == 13
    assert headers1["authorization"] == "Bearer s3cret"


async def test_a_header_can_be_left_out(reference: WalletServer) -> None:
    """headers={name: None} removes a header the platform would send."""
    async with PlatformClient(reference.url) as client:
        answer = await client.post(ADJUST, adjustment().body(), headers={"trace": None})
    assert answer.outcome == "INVALID_PARAMETER"
    assert "trace" not in reference.wallet.seen[0][1]


async def test_a_late_answer_is_a_timeout() -> None:
    """An answer later than the deadline raises PlatformTimeout (the money still moved)."""
    wallet = Wallet(faults=Faults(slow_every=1, slow_s=0.5))
    async with serving(wallet) as server, PlatformClient(server.url, timeout_s=0.1) as client:
        with pytest.raises(PlatformTimeout):
            await client.adjust(adjustment())
    assert wallet.accounts[KIT_LOGIN].amount == Decimal("998.75")


async def test_no_server_is_unreachable() -> None:
    """A refused connection raises PlatformUnreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with PlatformClient(f"http://127.0.0.1:{port}/api") as client:
        with pytest.raises(PlatformUnreachable):
            await client.balance(KIT_LOGIN, "u1", "USD")


async def test_raw_bytes_go_out_as_json(reference: WalletServer) -> None:
    """A bytes body is sent as it is, still labelled application/json."""
    async with PlatformClient(reference.url) as client:
        answer = await client.post(ADJUST, b"{not json")
    assert (answer.outcome, answer.msg) == ("INVALID_PARAMETER", "the body is not JSON")
    assert reference.wallet.seen[0][1]["content-type"] == "application/json"


async def test_the_pool_holds_connections_requests_on_the_wire() -> None:
    """With `connections=2`, six answers held back 0.1 s each take at least 0.3 s."""
    wallet = Wallet(faults=Faults(slow_every=1, slow_s=0.1))
    async with serving(wallet) as server, PlatformClient(server.url, connections=2) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(client.adjust(adjustment(number=f"n-{i}")) for i in range(6))
        )
        elapsed = time.perf_counter() - started
    assert [answer.outcome for answer in answers] == ["0"] * 6
    assert elapsed >= 0.29
