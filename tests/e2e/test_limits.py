"""Limits and flow control over real TCP (docs/protocol.md sections 1 and 8)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from ..conftest import Client, GatewayFactory, Harness
from ..fakes import GatedLedger, storage_of


def health_frame(ext_id: str, size: int | None = None) -> bytes:
    """A HealthCheck request frame, padded to exactly `size` bytes before its terminator."""
    frame = orjson.dumps({"command": "HealthCheck", "extID": ext_id, "data": {"pad": ""}})
    if size is not None:
        assert size >= len(frame)
        frame = frame.replace(b'"pad":""', b'"pad":"' + b"x" * (size - len(frame)) + b'"')
        assert len(frame) == size
    return frame


async def closed_with_413(client: Client) -> None:
    """The client got exactly one 413 FRAME_TOO_LARGE with extID null, then the close."""
    await asyncio.wait_for(client.closed.wait(), 5)
    assert len(client.orphans) == 1, client.orphans
    answer = client.orphans[0]
    assert (answer["extID"], answer["status"], answer["error"]) == (None, 413, "FRAME_TOO_LARGE")
    assert isinstance(answer["message"], str)


@pytest.mark.parametrize("terminated", [True, False], ids=["whole-frame", "partial-frame"])
async def test_frame_too_large_is_413_and_closes(
    make_gateway: GatewayFactory, terminated: bool
) -> None:
    """A frame over max_frame_bytes, finished or not, gets 413 then the connection closes."""
    h = await make_gateway(max_frame_bytes=4096)
    bystander = await h.client()
    assert (await bystander.ok("GetGroups"))["count"] == 1
    client = await h.client()
    assert (await client.ok("GetGroups"))["count"] == 1
    big = health_frame("big", 5000)
    client.send_raw(big + b"\r\n" if terminated else big)
    await closed_with_413(client)
    assert (await bystander.ok("GetGroups"))["count"] == 1
    late = await h.client()
    assert (await late.ok("HealthCheck"))["status"] == "ok"


@pytest.mark.parametrize("terminated", [True, False], ids=["whole-frame", "partial-frame"])
async def test_frames_before_an_oversized_one_are_answered(
    make_gateway: GatewayFactory, terminated: bool
) -> None:
    """A read and a deposit sent in the same write as an oversized frame, finished or not, are
    handled first; the deposit is applied though the connection closes before it could be
    answered."""
    h = await make_gateway(max_frame_bytes=4096)
    client, other = await h.client(), await h.client()
    await h.add_user(client, 1001)
    assert (await other.ok("GetGroups"))["count"] == 1  # binds its token: it hears events
    read = client.expect("read-1")
    client.send_raw(
        orjson.dumps({"command": "GetAccountByLogin", "extID": "read-1", "data": {"login": 1001}})
        + b"\r\n"
        + orjson.dumps(
            {"command": "BalanceIn", "extID": "dep-1", "data": {"login": 1001, "amount": 5}}
        )
        + b"\r\n"
        + health_frame("big", 5000)
        + (b"\r\n" if terminated else b"")
    )
    assert (await asyncio.wait_for(read, 5))["status"] == 200
    await asyncio.wait_for(client.closed.wait(), 5)
    assert [(a["extID"], a["status"]) for a in client.orphans] == [(None, 413)]
    # The deposit reached the main loop before the close, so it completes (unanswered) and is
    # announced to the other session.
    event = await other.next_event()
    while event["event"] != "balance:event":
        event = await other.next_event()
    assert event["data"]["balance"] == 5.0
    assert (await other.ok("GetAccountByLogin", {"login": 1001}))["balance"] == 5.0


async def test_frame_limit_edge(make_gateway: GatewayFactory) -> None:
    """A frame of exactly max_frame_bytes is served; one byte more is 413."""
    h = await make_gateway(max_frame_bytes=4096)
    client = await h.client()
    future = client.expect("edge")
    client.send_raw(health_frame("edge", 4096) + b"\r\n")
    assert (await asyncio.wait_for(future, 5))["status"] == 200
    future = client.expect("edge-lf")
    client.send_raw(health_frame("edge-lf", 4096) + b"\n")
    assert (await asyncio.wait_for(future, 5))["status"] == 200
    client.send_raw(health_frame("over", 4097) + b"\r\n")
    await closed_with_413(client)


async def test_frame_split_into_pieces_is_reassembled(make_gateway: GatewayFactory) -> None:
    """A frame near the limit arriving in small pieces is one request, answered once."""
    h = await make_gateway(max_frame_bytes=4096)
    client = await h.client()
    frame = health_frame("pieces", 4000) + b"\r\n"
    future = client.expect("pieces")
    for start in range(0, len(frame), 97):
        client.send_raw(frame[start : start + 97])
        await client.writer.drain()
    assert (await asyncio.wait_for(future, 5))["status"] == 200
    assert client.orphans == []


async def test_max_inflight_answers_429_at_once(make_gateway: GatewayFactory) -> None:
    """With max_inflight requests pending, another is 429 at once (a read behind the pending
    writes too: it would be held, so it counts), HealthCheck and other connections still answer,
    and the pending ones then finish."""
    h = await make_gateway(max_inflight=4, sync_timeout_ms=30_000, gated=True)
    storage = storage_of(h.gateway.ledger)
    assert isinstance(storage, GatedLedger)
    client = await h.client()
    other = await h.client()
    await h.add_user(client, 1001)
    storage.hold()
    pending = [client.send("BalanceInSync", {"login": 1001, "amount": 1}) for _ in range(4)]
    over = await client.request("BalanceInSync", {"login": 1001, "amount": 100})
    assert (over["status"], over["error"]) == (429, "TOO_MANY_REQUESTS")
    assert (await client.ok("HealthCheck"))["status"] == "ok"
    read = await client.request("GetAccountByLogin", {"login": 1001})
    assert (read["status"], read["error"]) == (429, "TOO_MANY_REQUESTS")
    assert (await other.ok("GetAccountByLogin", {"login": 1001}))["balance"] == 0.0
    assert (await other.ok("HealthCheck"))["status"] == "ok"  # the limit is per connection
    assert not any(future.done() for future in pending)
    storage.release()
    answers: list[dict[str, Any]] = await asyncio.wait_for(asyncio.gather(*pending), 10)
    assert [answer["status"] for answer in answers] == [200, 200, 200, 200]
    assert len({answer["data"]["order"] for answer in answers}) == 4
    account = await client.ok("GetAccountByLogin", {"login": 1001})
    assert account["balance"] == 4.0
    assert (await client.ok("MngGetTradesByFilter", {"login": 1001}))["count"] == 4
    assert h.gateway.waiters.pending_count() == 0


async def pipeline_health_checks(client: Client, count: int) -> list[dict[str, Any]]:
    """Write `count` HealthChecks in one write; their answers, each matched by its own extID."""
    ext_ids = [f"hc-{index}" for index in range(count)]
    futures = [client.expect(ext_id) for ext_id in ext_ids]
    client.send_raw(b"".join(health_frame(ext_id) + b"\r\n" for ext_id in ext_ids))
    answers = await asyncio.wait_for(asyncio.gather(*futures), 30)
    assert [answer["extID"] for answer in answers] == ext_ids
    assert client.orphans == []  # no answer twice, none under a wrong or null extID
    return answers


async def test_twenty_thousand_pipelined_frames(gw: Harness) -> None:
    """20,000 HealthChecks pipelined in one write are all answered 200 under their own extIDs,
    at default settings: reads are answered as they are read and never count as pending."""
    client = await gw.client()
    answers = await pipeline_health_checks(client, 20_000)
    assert [answer["status"] for answer in answers] == [200] * 20_000
    assert (await client.ok("GetGroups"))["count"] == 1


async def test_pipelined_writes_beyond_the_inflight_limit(make_gateway: GatewayFactory) -> None:
    """Pipelined deposits past max_inflight each get exactly one answer, 200 or 429, and exactly
    the ones answered 200 moved money."""
    h = await make_gateway(max_inflight=64)
    client = await h.client()
    await h.add_user(client, 1001)
    ext_ids = [f"dep-{index}" for index in range(2_000)]
    futures = [client.expect(ext_id) for ext_id in ext_ids]
    client.send_raw(
        b"".join(
            orjson.dumps(
                {"command": "BalanceIn", "extID": ext_id, "data": {"login": 1001, "amount": 1}}
            )
            + b"\r\n"
            for ext_id in ext_ids
        )
    )
    answers = await asyncio.wait_for(asyncio.gather(*futures), 30)
    assert client.orphans == []
    accepted = [answer for answer in answers if answer["status"] == 200]
    refused = [answer for answer in answers if answer["status"] != 200]
    assert accepted and refused  # 2,000 in one write cannot all fit under a limit of 64
    assert {(answer["status"], answer["error"]) for answer in refused} == {
        (429, "TOO_MANY_REQUESTS")
    }
    account = await client.ok("GetAccountByLogin", {"login": 1001})
    assert account["balance"] == float(len(accepted))
    trades = await client.ok("MngGetTradesByFilter", {"login": 1001, "limit": 5000})
    assert trades["count"] == len(accepted)
