"""The metrics endpoint of a real gateway: real traffic over TCP, real scrapes over HTTP.

Counts are compared between two scrapes around the traffic, so each assertion says exactly what
the traffic did. Scrapes run in a thread (urllib blocks) and are parsed with prometheus_client's
own parser, as Prometheus would read them.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from manager_gateway.session.access import SessionType

from ..conftest import Client, GatewayFactory, Harness, ledger, wait_until, with_free_port
from ..fakes import FakeClock
from ..prometheus_text import Families, parse, sample

LOGIN = 7001
CREDIT = {"login": LOGIN, "amount": 300.0, "comment": "Promotion credit"}
SCRAPE_TIMEOUT_S = 10
EVENTS = ["trade:event", "balance:event"]
LATENCY = "gateway_request_duration_seconds"
BATCH_OPERATIONS = "gateway_batch_operations"
BATCH_COMMIT = "gateway_batch_commit_seconds"
ROUNDS = 5
CLIENTS_PER_ROUND = 8


async def metrics_gateway(make_gateway: GatewayFactory, **settings: Any) -> Harness:
    """A gateway serving metrics on a port that was free a moment ago."""
    return await with_free_port(make_gateway, "metrics_port", **settings)


def metrics_port(gw: Harness) -> int:
    server = gw.gateway.metrics_server
    assert server is not None
    return server.port


async def scrape(gw: Harness) -> Families:
    """GET /metrics from the gateway's endpoint; the parsed families."""
    url = f"http://127.0.0.1:{metrics_port(gw)}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return str(response.read().decode())

    return parse(await asyncio.to_thread(get))


def requests_by_series(families: Families) -> dict[tuple[str, str], float]:
    return {
        (found.labels["command"], found.labels["status"]): found.value
        for found in families.get("gateway_requests", [])
        if found.name == "gateway_requests_total"
    }


def changed(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    """The series whose value moved, and by how much."""
    moved = {key: count - before.get(key, 0.0) for key, count in after.items()}
    return {key: by for key, by in moved.items() if by}


def delta(
    before: Families, after: Families, name: str, family: str | None = None, **labels: str
) -> float:
    """How much sample `name` moved between two scrapes."""
    return sample(after, name, family, **labels) - sample(before, name, family, **labels)


def counter(name: str) -> tuple[str, str]:
    """(sample name, family name) of a counter."""
    return f"{name}_total", name


def listening_ports() -> set[int]:
    """The TCP ports this process listens on, from /proc (Linux)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since listed
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/net/tcp").exists(), reason="reads listening sockets from /proc"
)


async def test_traffic_moves_the_counts_exactly(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """A Sync credit, a refusal, unknown commands, invalid JSON and a Sync timeout move the
    request, latency, event, batch, waiter and timeout metrics by exactly what they did."""
    gw = await metrics_gateway(make_gateway, gated=True, clock=frozen_clock, sync_timeout_ms=1000)
    client, probe = await gw.client(), await gw.client()
    await gw.add_user(probe, LOGIN)
    before = await scrape(gw)
    window_started = time.perf_counter()

    await client.ok("CreditInSync", CREDIT)
    refused = await client.request("CreditIn", {**CREDIT, "amount": -5.0})
    assert (refused["status"], refused["error"]) == (400, "INVALID_DATA")
    for name in ("NoSuchCommand", "AlsoNoSuchCommand"):
        assert (await client.request(name))["status"] == 404
    client.send_raw(b"{not json\r\n")
    await client.ok("HealthCheck")  # answered after the invalid frame, on the same connection
    assert [orphan["error"] for orphan in client.orphans] == ["INVALID_JSON"]

    # A Sync credit whose commit is held, and an operation queued behind it.
    held = ledger(gw)
    held.hold()
    held.commit_started.clear()
    timed_out = client.send("CreditInSync", CREDIT)
    await wait_until(probe, held.commit_started.is_set)
    held_from = time.perf_counter()
    queued = client.send("BalanceIn", {"login": LOGIN, "amount": 10.0})
    await wait_until(probe, lambda: gw.gateway.runtime.queue_depth == 1)
    during = await scrape(gw)
    assert sample(during, "gateway_sync_waiters") == 1
    assert sample(during, "gateway_main_loop_queued_operations") == 1
    frozen_clock.advance(1.0)  # the waiter's sync_timeout_ms passes
    assert (await asyncio.wait_for(timed_out, SCRAPE_TIMEOUT_S))["status"] == 504
    held_for = time.perf_counter() - held_from
    held.release()
    assert (await asyncio.wait_for(queued, SCRAPE_TIMEOUT_S))["status"] == 200
    window = time.perf_counter() - window_started
    after = await scrape(gw)

    moved = changed(requests_by_series(before), requests_by_series(after))
    assert moved.pop(("HealthCheck", "200")) >= 1  # also the polls of wait_until
    assert moved == {
        ("CreditInSync", "200"): 1,
        ("CreditIn", "400"): 1,
        ("unknown", "404"): 2,
        ("invalid", "400"): 1,
        ("CreditInSync", "504"): 1,
        ("BalanceIn", "200"): 1,
    }
    for command, answers in [
        ("CreditInSync", 2),
        ("CreditIn", 1),
        ("unknown", 2),
        ("invalid", 1),
        ("BalanceIn", 1),
    ]:
        assert delta(before, after, f"{LATENCY}_count", LATENCY, command=command) == answers
    assert delta(before, after, *counter("gateway_sync_timeouts")) == 1
    assert sample(after, "gateway_sync_waiters") == 0
    assert sample(after, "gateway_main_loop_queued_operations") == 0
    # Three applied operations, each heard by both sessions: 6 frames per channel.
    for event in EVENTS:
        assert delta(before, after, *counter("gateway_events_pushed"), event=event) == 6
    # Three batches of one operation each (the queued one waited for the held commit).
    assert delta(before, after, f"{BATCH_OPERATIONS}_count", BATCH_OPERATIONS) == 3
    assert delta(before, after, f"{BATCH_OPERATIONS}_sum", BATCH_OPERATIONS) == 3
    assert delta(before, after, f"{BATCH_COMMIT}_count", BATCH_COMMIT) == 3
    # Commit time in seconds, bounded by what this test saw: at least the time it held the one
    # commit, at most the time from its first request to its last answer. No fixed threshold.
    commit_s = delta(before, after, f"{BATCH_COMMIT}_sum", BATCH_COMMIT)
    assert held_for <= commit_s <= window, (held_for, commit_s, window)
    assert sample(after, *counter("gateway_ledger_commit_failures")) == 0
    assert sample(after, *counter("gateway_slow_consumer_disconnects")) == 0
    assert sample(after, "gateway_connections_open") == 2
    assert sample(after, "gateway_sessions", type="manager") == 2


async def test_failed_commit_is_counted(make_gateway: GatewayFactory) -> None:
    """A ledger commit that fails counts one commit failure and one 500, and no batch."""
    gw = await metrics_gateway(make_gateway, gated=True)
    client = await gw.client()
    await gw.add_user(client, LOGIN)
    before = await scrape(gw)
    ledger(gw).fail_next = OSError("disk full")
    failed = await client.request("BalanceIn", {"login": LOGIN, "amount": 5.0})
    assert (failed["status"], failed["error"]) == (500, "INTERNAL_ERROR")
    after = await scrape(gw)
    assert changed(requests_by_series(before), requests_by_series(after)) == {
        ("BalanceIn", "500"): 1
    }
    assert delta(before, after, *counter("gateway_ledger_commit_failures")) == 1
    assert delta(before, after, f"{BATCH_OPERATIONS}_count", BATCH_OPERATIONS) == 0


async def test_events_are_counted_per_recipient(make_gateway: GatewayFactory) -> None:
    """One change is counted once per session it is pushed to: not to one that unsubscribed,
    nor to one whose group masks do not cover the account."""
    gw = await metrics_gateway(make_gateway)
    hearing = await gw.client()
    deaf = await gw.client()
    await deaf.ok("Unsubscribe", {"chanels": EVENTS})
    other_group = await gw.client(role=SessionType.DEALER, groups=["vip*"])
    await other_group.ok("SubscribeAll")
    await gw.add_user(hearing, LOGIN)
    before = await scrape(gw)
    await hearing.ok("BalanceIn", {"login": LOGIN, "amount": 5.0})
    after = await scrape(gw)
    for event in EVENTS:
        assert delta(before, after, *counter("gateway_events_pushed"), event=event) == 1


async def test_connections_and_sessions(make_gateway: GatewayFactory) -> None:
    """Accepted, refused and open connections; sessions by the type of their bound token."""
    gw = await metrics_gateway(make_gateway, max_connections=5)
    clients = {}
    for role in SessionType.USER, SessionType.MANAGER, SessionType.DEALER, SessionType.ADMIN:
        clients[role] = await gw.client(role=role, login=1001)
        await clients[role].ok("SubscribeAll")  # binds the token
    gw.clients.append(await Client.connect(gw.port))  # connected, never authenticated
    refused = await Client.connect(gw.port)
    await asyncio.wait_for(refused.closed.wait(), SCRAPE_TIMEOUT_S)
    await refused.close()
    families = await scrape(gw)
    assert sample(families, *counter("gateway_connections_accepted")) == 5
    assert sample(families, *counter("gateway_connections_refused")) == 1
    assert sample(families, "gateway_connections_open") == 5
    sessions = {
        t: sample(families, "gateway_sessions", type=t)
        for t in ("user", "manager", "dealer", "admin", "system", "fix")
    }
    assert sessions == {"user": 1, "manager": 1, "dealer": 1, "admin": 1, "system": 0, "fix": 0}

    await clients[SessionType.DEALER].close()
    probe = clients[SessionType.MANAGER]
    await wait_until(probe, lambda: len(gw.gateway.connections) == 4)
    families = await scrape(gw)
    assert sample(families, "gateway_connections_open") == 4
    assert sample(families, "gateway_sessions", type="dealer") == 0
    assert sample(families, "gateway_sessions", type="manager") == 1


@needs_proc
async def test_metrics_are_off_by_default(make_gateway: GatewayFactory) -> None:
    """With default settings the gateway listens on its API port only."""
    listening_before = listening_ports()
    gw = await make_gateway()
    assert gw.gateway.settings.metrics_port == 0
    assert gw.gateway.metrics_server is None
    assert listening_ports() - listening_before == {gw.port}


@needs_proc
async def test_shutdown_closes_the_metrics_port(make_gateway: GatewayFactory) -> None:
    """The endpoint listens while the gateway runs and its port is closed by shutdown()."""
    listening_before = listening_ports()
    gw = await metrics_gateway(make_gateway)
    port = metrics_port(gw)
    assert listening_ports() - listening_before == {gw.port, port}
    assert "gateway_requests" in await scrape(gw)
    await gw.close_clients()
    await gw.gateway.shutdown()
    assert listening_ports() - listening_before == set()


@needs_proc
async def test_taken_metrics_port_fails_start_and_leaves_nothing_open(
    make_gateway: GatewayFactory,
) -> None:
    """A metrics port already in use fails start() with EADDRINUSE; the API port is closed again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listening_before = listening_ports()
        with pytest.raises(OSError) as raised:
            await make_gateway(metrics_port=taken.getsockname()[1])
        assert raised.value.errno == errno.EADDRINUSE
        assert listening_ports() == listening_before
    # The ledger was closed cleanly: the same data dir starts again.
    gw = await make_gateway()
    assert (await (await gw.client()).ok("HealthCheck"))["status"] == "ok"


async def test_scrapes_during_traffic_are_whole_and_only_grow(make_gateway: GatewayFactory) -> None:
    """Scrapes taken on the HTTP thread while clients connect, pipeline Sync credits and reads
    and disconnect all succeed, counters never go back, and the final counts are exact."""
    gw = await metrics_gateway(make_gateway)
    admin = await gw.client()
    await gw.add_user(admin, LOGIN)
    before = await scrape(gw)
    done = False

    async def keep_scraping() -> list[Families]:
        scrapes = []
        while not done:
            scrapes.append(await scrape(gw))
        return scrapes

    scraper = asyncio.create_task(keep_scraping())
    for round_ in range(ROUNDS):
        clients = [await Client.connect(gw.port, gw.token()) for _ in range(CLIENTS_PER_ROUND)]
        futures = [
            future
            for c, client in enumerate(clients)
            for future in (
                client.send("CreditInSync", {**CREDIT, "amount": 1.0}, ext_id=f"load-{round_}-{c}"),
                client.send("GetAccountByLogin", {"login": LOGIN}),
                client.send("NoSuchCommand"),
            )
        ]
        answers = await asyncio.wait_for(asyncio.gather(*futures), SCRAPE_TIMEOUT_S)
        assert [answer["status"] for answer in answers] == [200, 200, 404] * CLIENTS_PER_ROUND
        for client in clients:
            await client.close()
    done = True
    scrapes = [before, *await scraper, await scrape(gw)]

    assert len(scrapes) > 2
    for earlier, later in itertools.pairwise(scrapes):
        moved = changed(requests_by_series(earlier), requests_by_series(later))
        assert all(by > 0 for by in moved.values()), moved
    total = ROUNDS * CLIENTS_PER_ROUND
    assert changed(requests_by_series(before), requests_by_series(scrapes[-1])) == {
        ("CreditInSync", "200"): total,
        ("GetAccountByLogin", "200"): total,
        ("unknown", "404"): total,
    }
    assert delta(before, scrapes[-1], *counter("gateway_connections_accepted")) == total
