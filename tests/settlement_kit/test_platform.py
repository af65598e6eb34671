"""The platform's requests and its reading of the envelope, against a real HTTP wallet."""

from __future__ import annotations

import socket
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


def adjustment(operation: str = "OPEN_POSITION", amount: str = "1.25") -> Adjustment:
    return Adjustment(KIT_LOGIN, "u1", "USD", operation, Decimal(amount), 2, "n-1", 42)


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
