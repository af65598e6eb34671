"""run_load end to end: the real gateway, the baseline server, correct and wrong test servers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway_bench.checks import cents
from gateway_bench.client import GatewayClient
from gateway_bench.loadgen import LoadError, LoadSpec, run_load

from ..conftest import GatewayFactory
from .servers import (
    WRONG_FIRST_LOGIN,
    ScriptedServer,
    answer_correctly,
    answer_wrongly,
    correct_answer,
    frame,
    serving,
)

BASELINE_SERVER = Path(__file__).parents[2] / "tools" / "baseline_server.py"
FINANCE = (
    "BalanceIn",
    "BalanceInSync",
    "BalanceOut",
    "BalanceOutSync",
    "CreditIn",
    "CreditInSync",
    "CreditOut",
    "CreditOutSync",
)


def small(port: int, **settings: Any) -> LoadSpec:
    """A short, quiet run: a request count, never a duration."""
    base: dict[str, Any] = {
        "port": port,
        "connections": 3,
        "inflight": 2,
        "duration_s": None,
        "requests": 60,
        "progress": False,
    }
    return LoadSpec(**{**base, **settings})


async def test_gateway_moves_exactly_the_money_that_was_sent(make_gateway: GatewayFactory) -> None:
    """Against the real gateway with created accounts: every request is answered ok and each
    account's balance and credit moved by exactly the amounts the load generator sent."""
    harness = await make_gateway()
    token = harness.token()
    spec = small(
        harness.port,
        token=token,
        create_accounts=True,
        accounts=3,
        requests=120,
        initial_balance=1000.0,
        mix={**dict.fromkeys(FINANCE, 1.0), "GetAccountByLogin": 1.0},
    )
    result = await run_load(spec)
    assert (result.requests, result.ok, result.errors, result.mismatches) == (120, 120, {}, 0)
    assert result.orphans == 0 and result.events_received == 0  # unsubscribed from events
    assert sorted(result.ledger) == list(spec.logins())
    client = await GatewayClient.connect("127.0.0.1", harness.port)
    for login in spec.logins():
        account = await client.request("GetAccountByLogin", {"login": login}, token=token)
        moved = result.ledger[login]
        assert cents(account["data"]["balance"]) == cents(1000.0 + moved["balance"])
        assert cents(account["data"]["credit"]) == cents(1000.0 + moved["credit"])
    client.close()
    await client.wait_closed()
    assert harness.gateway.waiters.pending_count() == 0


async def test_gateway_events_are_counted_when_subscribed(make_gateway: GatewayFactory) -> None:
    """With events on, the trade and balance events of the load's own operations arrive."""
    harness = await make_gateway()
    spec = small(
        harness.port,
        token=harness.token(),
        create_accounts=True,
        accounts=1,
        connections=1,
        requests=10,
        events=True,
    )
    result = await run_load(spec)
    assert result.ok == 10 and result.errors == {}
    # AddUser and funding emit some; each CreditInSync one trade:event and one balance:event.
    assert result.events_received >= 20


async def test_existing_accounts_are_reused(make_gateway: GatewayFactory) -> None:
    """create_accounts on logins that exist already (USER_EXISTS) is fine: a second run works."""
    harness = await make_gateway()
    spec = small(harness.port, token=harness.token(), create_accounts=True, accounts=1, requests=5)
    for _ in range(2):
        result = await run_load(spec)
        assert (result.ok, result.errors, result.mismatches) == (5, {}, 0)


async def test_gateway_without_a_token_fails_to_start(make_gateway: GatewayFactory) -> None:
    """No token: the gateway answers the first request 401 and run_load raises LoadError."""
    harness = await make_gateway()
    with pytest.raises(LoadError, match="401 INVALID_TOKEN"):
        await run_load(small(harness.port))


@pytest.fixture
async def baseline_port() -> AsyncIterator[int]:
    """tools/baseline_server.py on a free port, as a subprocess."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(BASELINE_SERVER), "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"listening on" in line, line
        yield int(line.rsplit(b":", 1)[1])
    finally:
        process.terminate()
        await process.wait()


async def test_baseline_server_run_is_clean(baseline_port: int) -> None:
    """Against the baseline server every CreditInSync answer is ok and matches."""
    result = await run_load(small(baseline_port, requests=300, connections=4, inflight=4))
    assert (result.requests, result.ok, result.errors, result.mismatches) == (300, 300, {}, 0)
    summary = result.to_dict()
    assert summary["answers"] == 300 and summary["p50_ms"] is not None
    assert summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert sum(row["ok"] for row in summary["timeline"]) == 300


async def test_wrong_server_errors_mismatches_and_orphans_are_counted() -> None:
    """A server answering wrong logins, 500s and extra unknown extIDs: each is counted as a
    mismatch, an error or an orphan, and nothing crashes."""
    async with serving(answer_wrongly) as server:
        spec = small(
            server.port, accounts=4, first_login=WRONG_FIRST_LOGIN, requests=40, connections=2
        )
        result = await run_load(spec)
    assert result.requests == 40 and result.ok == 20
    assert result.errors == {"500/INTERNAL_ERROR": 10}
    # Every stray answer is an orphan; the run ends once each request is answered, so the
    # last strays may not have been read yet.
    assert 1 <= result.orphans <= 10 and result.late_answers == 0
    assert result.mismatch_fields == {"login": 10, "extID": result.orphans}
    assert result.mismatches == 10 + result.orphans
    assert {e["reason"].split(":")[0] for e in result.mismatch_examples} <= {"login", "extID"}
    assert result.failed


async def test_open_loop_sends_on_schedule_whatever_is_outstanding() -> None:
    """Open loop: a server that answers nothing until it holds 10 requests still gets all 10
    (a closed loop would wait), and the first latency counts from its intended send time, so
    it is at least the 9 intervals the scheduler needed to send the other nine."""
    held: list[dict[str, Any]] = []

    def hold_ten(request: dict[str, Any]) -> list[bytes]:
        if request["command"] == "Unsubscribe":
            return answer_correctly(request)
        held.append(request)
        return [frame(correct_answer(r)) for r in held] if len(held) == 10 else []

    async with serving(hold_ten) as server:
        result = await run_load(small(server.port, rate=200.0, requests=10, connections=1))
    assert (result.requests, result.ok, result.errors) == (10, 10, {})
    assert result.histogram.max_ms is not None and result.histogram.max_ms >= 9 / 200 * 1000
    assert result.scheduler_lag is not None and result.scheduler_lag["count"] == 10


async def test_open_loop_with_a_duration_and_warmup() -> None:
    """Open loop for a short duration after a warmup: measured requests are the rate times the
    duration, warmup answers are kept apart (times are powers of two: exact in binary)."""
    async with serving(answer_correctly) as server:
        spec = small(server.port, rate=256.0, requests=None, duration_s=0.125, warmup_s=0.0625)
        result = await run_load(spec)
    assert result.requests == 32 and result.ok == 32 and result.errors == {}
    assert result.warmup["ok"] == 16 and result.warmup["errors"] == {}


async def test_closed_loop_keeps_inflight_requests_outstanding_per_connection() -> None:
    """Closed loop: before any answer each connection has exactly `inflight` requests out;
    after the answers it goes on until the request count is reached."""
    servers: list[ScriptedServer] = []
    burst: list[int] = []  # per load request before the first answer: its connection's index

    def hold_first_six(request: dict[str, Any]) -> list[bytes]:
        if request["command"] == "Unsubscribe":
            return answer_correctly(request)
        if len(burst) >= 6:
            return answer_correctly(request)
        server = servers[0]
        burst.append(server.writers.index(server.origins[-1]))
        if len(burst) == 6:
            held = [
                (r, w)
                for r, w in zip(server.requests, server.origins, strict=True)
                if r["command"] != "Unsubscribe"
            ]
            for held_request, writer in held:
                writer.write(frame(correct_answer(held_request)))
        return []

    async with serving(hold_first_six) as server:
        servers.append(server)
        result = await run_load(small(server.port, connections=2, inflight=3, requests=20))
    assert sorted(burst) == [0, 0, 0, 1, 1, 1]
    assert (result.requests, result.ok, result.errors) == (20, 20, {})


async def test_unanswered_requests_time_out_as_client_errors() -> None:
    """Requests a server never answers count as client/TIMEOUT after timeout_s; no latency is
    recorded for them and the run still ends."""

    def set_up_only(request: dict[str, Any]) -> list[bytes]:
        return answer_correctly(request) if request["command"] == "Unsubscribe" else []

    async with serving(set_up_only) as server:
        spec = small(server.port, connections=2, inflight=3, requests=6, timeout_s=0.2)
        result = await run_load(spec)
    assert result.errors == {"client/TIMEOUT": 6} and result.failed
    assert result.ok == 0 and result.histogram.count == 0 and result.to_dict()["p50_ms"] is None


async def test_a_dropped_connection_fails_its_requests_and_the_run_ends() -> None:
    """A server that drops every connection mid-run: the requests outstanding count as
    client/CONNECTION_LOST and the run ends instead of waiting for answers that cannot come."""
    servers: list[ScriptedServer] = []
    answered: list[dict[str, Any]] = []

    def drop_at_the_fifth(request: dict[str, Any]) -> list[bytes]:
        if request["command"] != "Unsubscribe":
            answered.append(request)
            if len(answered) == 5:
                servers[0].drop_connections()
                return []
        return answer_correctly(request)

    async with serving(drop_at_the_fifth) as server:
        servers.append(server)
        result = await run_load(small(server.port, connections=2, inflight=2, requests=100))
    assert result.errors["client/CONNECTION_LOST"] >= 1
    assert result.ok + result.errors["client/CONNECTION_LOST"] == result.requests < 100
    assert result.failed


async def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """With progress on, the tqdm bar is written to stderr and nothing to stdout."""
    async with serving(answer_correctly) as server:
        result = await run_load(small(server.port, progress=True, requests=30))
    assert result.ok == 30
    captured = capsys.readouterr()
    assert "30/30 ok" in captured.err and captured.out == ""


async def test_a_server_that_is_not_there_raises_load_error() -> None:
    """No server on the port: run_load raises LoadError naming the address."""
    async with serving(answer_correctly) as server:
        port = server.port
    with pytest.raises(LoadError, match=f"127.0.0.1:{port}"):
        await run_load(small(port))


async def test_invalid_spec_is_refused_before_connecting() -> None:
    """run_load validates its spec first: zero connections is a ValueError."""
    with pytest.raises(ValueError, match="connections"):
        await run_load(small(1, connections=0))
