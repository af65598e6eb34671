"""The gateway process as an operator runs it: where its listeners bind, what a failed start
leaves behind, and what the drain waits for, answers and logs (docs/protocol.md section 9).

Most tests use the `make_gateway` fixture; the ones that need the API listener on a chosen port
build their `Gateway` themselves (`start_gateway`). A password hash is held in its thread with a
`threading.Event`, so the drain meets an AddUser exactly where a test wants it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from manager_gateway.commands import accounts
from manager_gateway.config import load_settings
from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.server import app as app_module
from manager_gateway.server import connection as connection_module
from manager_gateway.server.app import Gateway
from manager_gateway.session.passwords import hash_password
from manager_gateway.settlement.http import AMOUNT

from ..conftest import (
    DEMO_USER,
    PORT_ATTEMPTS,
    Client,
    GatewayFactory,
    Harness,
    ledger,
    unused_port,
    wait_until,
)
from ..fakes import FakeClock
from ..platform import COMPANY, Platform, adjustment, base_url, fund, settlement_gateway
from .test_metrics import listening_ports, needs_proc
from .test_shutdown import SHUTTING_DOWN, start_shutdown

LOGIN = 1001
WAIT_S = 10  # bound on anything that should happen at once; a hung drain fails the test
SHORT_SHUTDOWN_S = 0.2  # the drain's bound where a test lets it expire
BACKLOG = 1024  # the listen backlog both listeners ask for (capped by net.core.somaxconn)

#: The idempotency digest the ledger stores for BalanceIn {"login": 1001, "amount": 5} under
#: jwt_secret "a-test-signing-secret-of-32-bytes", as written by this version: a later version
#: must store (and so match) the same, or retries across an upgrade are refused as mismatches.
GOLDEN_DIGEST = "6b4526559907469c85e742176c861e9bb1aa132bb355b586f92f096cdc73cb33"

GatewayStarter = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[GatewayStarter]:
    """Start gateways with any settings, the API port included; all shut down at the end."""
    gateways: list[Gateway] = []

    async def start(**settings: Any) -> Gateway:
        config = load_settings(
            None,
            **{
                "host": "127.0.0.1",
                "port": 0,
                "settlement_port": 0,
                "data_dir": tmp_path / "data",
                "ledger_synchronous": "FULL",
                **settings,
            },
        )
        gateway = Gateway(config)
        gateways.append(gateway)
        await gateway.start()
        return gateway

    yield start
    for gateway in gateways:
        await gateway.shutdown()


async def on_free_ports(start: GatewayStarter, *names: str, **settings: Any) -> Gateway:
    """A gateway with each setting in `names` on a port that was free a moment ago."""
    for _ in range(PORT_ATTEMPTS):
        try:
            return await start(**{name: unused_port() for name in names}, **settings)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise AssertionError(f"no free ports for {names}")


def refused(port: int, host: str) -> bool:
    """Is a TCP connection to host:port refused?"""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == errno.ECONNREFUSED


def listen_backlog(port: int) -> int:
    """The backlog of this host's listening socket on `port`, as `ss` reports it (Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(out[2])


async def scrape(port: int) -> str:
    """The metrics endpoint's text."""

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT_S) as page:
            return str(page.read().decode())

    return await asyncio.to_thread(get)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(autouse=True)
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """What the server and connection modules log, whatever logging an earlier in-process CLI
    test configured (its level filter, its cached loggers). For every test: captured events are
    not rendered (a traceback rendered with its locals takes seconds under mutmut's tracing)."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        with structlog.testing.capture_logs() as captured:
            for module, name in ((app_module, "server"), (connection_module, "connection")):
                monkeypatch.setattr(module, "log", structlog.get_logger(f"manager_gateway.{name}"))
            yield captured
    finally:
        structlog.configure(**saved)


class HeldHashes:
    """AddUser's password hashing, held in its thread until `go` is set (at most WAIT_S)."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.finished = threading.Event()
        self.threads: list[str] = []  # the threads hashes ran on
        self.entries = threading.Semaphore(0)  # one release per hash begun

    def hash_password(self, password: str) -> str:
        self.threads.append(threading.current_thread().name)
        self.entries.release()
        self.go.wait(WAIT_S)
        try:
            return hash_password(password)
        finally:
            self.finished.set()

    async def wait_entered(self, count: int = 1) -> None:
        """Until `count` hashes (more) have begun."""
        for _ in range(count):
            assert await asyncio.to_thread(self.entries.acquire, True, WAIT_S)


@pytest.fixture
def held_hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldHashes]:
    held = HeldHashes()
    monkeypatch.setattr(accounts, "hash_password", held.hash_password)
    yield held
    held.go.set()


# -- start -------------------------------------------------------------------------------------


async def test_a_data_dir_whose_parents_are_missing_is_created(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """data_dir is created with any missing parents, and the ledger is written there."""
    data_dir = tmp_path / "not" / "yet" / "there"
    gw = await make_gateway(data_dir=data_dir)
    await gw.add_user(await gw.client(), LOGIN)
    assert (data_dir / LEDGER_FILE).is_file()


@needs_proc
@pytest.mark.skipif(shutil.which("ss") is None, reason="reads listen backlogs with ss")
async def test_each_listener_binds_its_configured_address_and_port(
    start_gateway: GatewayStarter,
) -> None:
    """The API, settlement and metrics listeners bind the ports and hosts configured (here
    127.0.0.1: not 127.0.0.2, which another interface would answer), with a listen backlog of
    1024 for bursts of connections; shutdown closes all three."""
    listening_before = listening_ports()
    gateway = await on_free_ports(start_gateway, "port", "settlement_port", "metrics_port")
    settings = gateway.settings
    assert gateway.metrics_server is not None
    ports = [gateway.port, gateway.settlement_port, gateway.metrics_server.port]
    assert ports == [settings.port, settings.settlement_port, settings.metrics_port]
    assert listening_ports() - listening_before == set(ports)
    for port in ports:
        assert refused(port, "127.0.0.2"), port
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    expected = min(BACKLOG, somaxconn)
    assert [listen_backlog(port) for port in ports[:2]] == [expected, expected]
    text = await scrape(gateway.metrics_server.port)
    assert "gateway_connections_accepted_total 0.0" in text
    assert "gateway_connections_open 0.0" in text
    await gateway.shutdown()
    assert listening_ports() - listening_before == set()


async def test_a_restart_rebinds_ports_its_predecessor_left_in_time_wait(
    start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    """The API and settlement connections the drain closed stay in TIME_WAIT on the gateway's
    side; a gateway started right after on the same ports binds them (SO_REUSEADDR)."""
    first = await on_free_ports(start_gateway, "settlement_port")
    client = await Client.connect(first.port)
    assert (await client.ok("HealthCheck"))["status"] == "ok"
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{first.settlement_port}/healthz"
        async with http.get(url) as response:
            assert response.status == 200
        await first.shutdown()  # closes both connections from the gateway's side
        await asyncio.wait_for(client.closed.wait(), WAIT_S)
        await client.close()
    second = await start_gateway(
        port=first.port, settlement_port=first.settlement_port, data_dir=tmp_path / "second"
    )
    assert (second.port, second.settlement_port) == (first.port, first.settlement_port)


@needs_proc
async def test_a_taken_port_fails_start_and_leaves_nothing_open(
    start_gateway: GatewayStarter,
) -> None:
    """A taken API port fails start() with EADDRINUSE; so does a taken metrics port once the API
    and settlement listeners are up, which are closed again. Either way nothing is left
    listening, shutdown() afterwards is harmless, and the data dir starts again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listening_before = listening_ports()
        for setting in ("port", "metrics_port"):
            with pytest.raises(OSError) as raised:
                await start_gateway(**{setting: port, "settlement_port": unused_port()})
            assert raised.value.errno == errno.EADDRINUSE
            assert listening_ports() == listening_before
    gateway = await start_gateway()
    client = await Client.connect(gateway.port)
    assert (await client.ok("HealthCheck"))["status"] == "ok"
    await client.close()


# -- the settlement listener -------------------------------------------------------------------


async def test_the_settlement_listener_serves_under_its_prefix_and_counts_its_answers(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The settlement routes answer under settlement_path_prefix and each answer is counted in
    the metrics; aiohttp writes no access log line (the gateway logs what matters itself) and
    takes over no signal (SIGTERM and SIGINT stay the host process's)."""
    caplog.set_level(logging.DEBUG, logger="aiohttp.access")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    h = await settlement_gateway(make_gateway, settlement_path_prefix="/wallet")
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    async with aiohttp.ClientSession() as http:
        platform = Platform(base_url(h, "/wallet"), http)
        answer = await platform.post(
            AMOUNT, {"thirdServerCode": "4242", "userName": "u", "currency": "USD"}
        )
        async with http.get(f"http://127.0.0.1:{h.gateway.settlement_port}/healthz") as health:
            assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert answer["code"] != "0"
    counted = h.gateway.metrics.settlement_answers
    assert {key: count for key, count in counted.items() if count} == {(AMOUNT, answer["code"]): 1}
    await h.gateway.shutdown()
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert [record for record in caplog.records if record.name.startswith("aiohttp")] == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_the_settlement_listener_speaks_tls_when_configured(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """With settlement_tls_cert_file and settlement_tls_key_file set, the settlement listener
    serves HTTPS with that certificate."""
    cert, key = self_signed(tmp_path)
    h = await settlement_gateway(
        make_gateway, settlement_tls_cert_file=cert, settlement_tls_key_file=key
    )
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    async with aiohttp.ClientSession() as http:
        url = f"https://127.0.0.1:{h.gateway.settlement_port}/healthz"
        async with http.get(url, ssl=context) as health:
            assert (health.status, await health.json()) == (200, {"status": "ok"})


async def test_a_settlement_request_never_finished_holds_the_drain_no_longer_than_its_bound(
    make_gateway: GatewayFactory,
) -> None:
    """A settlement client that sent its headers and never its body does not hold the drain
    past shutdown_timeout_s: its connection is closed and shutdown() returns."""
    h = await settlement_gateway(make_gateway, shutdown_timeout_s=SHORT_SHUTDOWN_S)
    reader, writer = await asyncio.open_connection("127.0.0.1", h.gateway.settlement_port)
    writer.write(
        f"POST /api/{AMOUNT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    # The interim answer comes from the request's handler task: the request is in progress.
    assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"HTTP/1.1 100 Continue\r\n"
    await asyncio.wait_for(h.gateway.shutdown(), WAIT_S)
    try:
        rest = await asyncio.wait_for(reader.read(), WAIT_S)
    except ConnectionResetError:
        rest = b""
    assert b"HTTP/1.1 200" not in rest
    writer.close()


# -- the drain ---------------------------------------------------------------------------------


async def test_the_drain_is_logged_from_listening_to_stopped(
    start_gateway: GatewayStarter, logs: list[MutableMapping[str, Any]]
) -> None:
    """An operator reads where the gateway listens, how many connections the drain found, each
    connection it closed and that it stopped."""
    gateway = await on_free_ports(start_gateway, "settlement_port", "metrics_port")
    assert gateway.metrics_server is not None
    clients = [await Client.connect(gateway.port) for _ in range(2)]
    for client in clients:
        assert (await client.ok("HealthCheck"))["status"] == "ok"
    await gateway.shutdown()
    for client in clients:
        await client.close()
    server_events = [entry for entry in logs if entry["event"].startswith("gateway_")]
    assert server_events == [
        {
            "event": "gateway_listening",
            "log_level": "info",
            "host": "127.0.0.1",
            "port": gateway.port,
            "data_dir": str(gateway.settings.data_dir),
            "tls": False,
            "settlement_port": gateway.settlement_port,
            "metrics_port": gateway.metrics_server.port,
        },
        {"event": "gateway_draining", "log_level": "info", "connections": 2},
        {"event": "gateway_stopped", "log_level": "info"},
    ]
    closing = [entry for entry in logs if entry["event"] == "connection_closing"]
    assert [entry["reason"] for entry in closing] == ["shutdown", "shutdown"]


async def test_an_add_user_hashing_when_the_drain_starts_is_completed(
    make_gateway: GatewayFactory, held_hashes: HeldHashes
) -> None:
    """The drain waits for requests in flight before it stops the main loop: an AddUser still
    hashing its password when the drain starts is applied and answered 200."""
    gw = await make_gateway()
    client = await gw.client()
    pending = client.send("AddUser", {**DEMO_USER, "login": LOGIN}, ext_id="hashing")
    await held_hashes.wait_entered()
    drain = await start_shutdown(gw)
    held_hashes.go.set()
    answer = await asyncio.wait_for(pending, WAIT_S)
    assert answer["status"] == 200, answer
    await asyncio.wait_for(drain, WAIT_S)
    assert gw.gateway.runtime.account(LOGIN) is not None


async def test_a_hash_that_never_ends_holds_the_drain_no_longer_than_its_bound(
    make_gateway: GatewayFactory, held_hashes: HeldHashes
) -> None:
    """An AddUser whose hash outlives the drain's bounds does not hold shutdown() (neither the
    in-flight wait nor the password pool's shutdown waits for it), and the Sync request queued
    behind it on the connection is answered 503 SHUTTING_DOWN before the connection closes."""
    gw = await make_gateway(shutdown_timeout_s=SHORT_SHUTDOWN_S)
    client = await gw.client()
    client.send("AddUser", {**DEMO_USER, "login": LOGIN}, ext_id="stuck")
    await held_hashes.wait_entered()
    behind = client.send("BalanceInSync", {"login": LOGIN, "amount": 1.0}, ext_id="behind")
    await wait_until(await gw.client(), lambda: gw.gateway.waiters.pending_count() == 1)
    await asyncio.wait_for(gw.gateway.shutdown(), WAIT_S)
    assert not held_hashes.finished.is_set(), "shutdown() waited for the hash"
    assert (await asyncio.wait_for(behind, WAIT_S)) == {"extID": "behind", **SHUTTING_DOWN}
    await asyncio.wait_for(client.closed.wait(), WAIT_S)
    assert "stuck" not in [answer.get("extID") for answer in client.orphans]


async def test_a_closed_connection_is_no_longer_a_listener(gw: Harness) -> None:
    """A connection that heard events is dropped from the hub's listeners when it closes, so the
    fan-out never walks closed connections (nor keeps them alive)."""
    listener, probe = await gw.client(), await gw.client()
    for client in (listener, probe):
        assert (await client.ok("GetGroups"))["count"] == 1  # binds a token: events on
    hub = gw.gateway.hub
    assert len(hub.listeners) == 2
    await listener.close()
    gw.clients.remove(listener)
    await wait_until(probe, lambda: len(gw.gateway.connections) == 1)
    assert hub.listeners == gw.gateway.connections


async def test_a_listener_that_is_off_is_logged_without_a_port(
    make_gateway: GatewayFactory, logs: list[MutableMapping[str, Any]]
) -> None:
    """With settlement and metrics off (port 0), the listening line names no port for them and
    the gateway reports settlement_port 0."""
    gw = await make_gateway()
    assert gw.gateway.settlement_port == 0
    [listening] = [entry for entry in logs if entry["event"] == "gateway_listening"]
    assert (listening["settlement_port"], listening["metrics_port"]) == (None, None)


# -- what the gateway wires from its settings ---------------------------------------------------


async def test_batches_hold_at_most_max_batch_operations_and_are_measured(
    make_gateway: GatewayFactory,
) -> None:
    """Operations queued behind a held commit are taken max_batch at a time, and each committed
    batch is observed in the batch-size histogram."""
    gw = await make_gateway(gated=True, max_batch=2)
    client, probe = await gw.client(), await gw.client()
    await gw.add_user(client, LOGIN)
    store = ledger(gw)
    store.commit_started.clear()
    store.hold()
    blocker = client.send("BalanceIn", {"login": LOGIN, "amount": 1})
    assert await asyncio.to_thread(store.commit_started.wait, WAIT_S)
    queued = [client.send("BalanceIn", {"login": LOGIN, "amount": 1}) for _ in range(5)]
    await wait_until(probe, lambda: gw.gateway.runtime.queue_depth == 5)
    histogram = gw.gateway.metrics.batch_operations
    before = list(histogram.counts)
    store.release()
    answers = await asyncio.wait_for(asyncio.gather(blocker, *queued), WAIT_S)
    assert [answer["status"] for answer in answers] == [200] * 6
    moved = [after - old for after, old in zip(histogram.counts, before, strict=True)]
    # Batches of 1 (the blocker), 2, 2 and 1: two in the "le 1" bucket, two in "le 2".
    assert moved == [2, 2] + [0] * (len(moved) - 2)


async def test_a_foreign_write_lock_is_waited_for_ledger_busy_timeout_ms_only(
    make_gateway: GatewayFactory,
) -> None:
    """A commit meeting another process's write lock waits ledger_busy_timeout_ms (here 50 ms),
    not SQLite's or the ledger's default (5 s), before it is answered 500."""
    gw = await make_gateway(ledger_busy_timeout_ms=50)
    client = await gw.client()
    await gw.add_user(client, LOGIN)
    holder = sqlite3.connect(gw.data_dir / LEDGER_FILE, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        # Far above 50 ms even on a loaded machine, and below the 5 s default.
        data = {"login": LOGIN, "amount": 1.0, "comment": "c"}
        refused = await client.request("CreditIn", data, timeout=4)
        assert refused["status"] == 500, refused
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_passwords_are_hashed_on_the_gateways_own_two_threads(
    make_gateway: GatewayFactory, held_hashes: HeldHashes
) -> None:
    """AddUser hashes on a pool of its own, named password-hash, of PASSWORD_HASH_THREADS (2)
    threads: with two hashes running, a third AddUser waits for one of those threads rather than
    taking another (each scrypt hash holds 16 MiB)."""
    gw = await make_gateway()
    clients = [await gw.client() for _ in range(3)]
    for index, client in enumerate(clients):
        client.send("AddUser", {**DEMO_USER, "login": LOGIN + index})
    await held_hashes.wait_entered(2)
    for client in clients:  # each AddUser has reached the pool once its next request is answered
        assert (await client.ok("HealthCheck"))["status"] == "ok"
    assert len(held_hashes.threads) == 2, held_hashes.threads  # the third one is queued
    held_hashes.go.set()
    for index, client in enumerate(clients):
        account = await client.ok("GetAccountByLogin", {"login": LOGIN + index})
        assert account["login"] == LOGIN + index
    assert len(held_hashes.threads) == 3
    assert sorted(set(held_hashes.threads)) == ["password-hash_0", "password-hash_1"]


async def test_idempotency_digests_on_disk_keep_their_format(
    make_gateway: GatewayFactory,
) -> None:
    """The digest stored with an idempotency key is keyed from the signing secret in a fixed way:
    a retry after a restart (or an upgrade) must find the digest an earlier run stored. Golden
    value for this secret and request."""
    gw = await make_gateway(jwt_secret="a-test-signing-secret-of-32-bytes")
    client = await gw.client()
    await gw.add_user(client, LOGIN)
    await client.ok("BalanceIn", {"login": LOGIN, "amount": 5}, ext_id="golden-1")
    await gw.close_clients()
    await gw.gateway.shutdown()
    db = sqlite3.connect(f"file:{gw.data_dir / LEDGER_FILE}?mode=ro", uri=True)
    try:
        [(digest,)] = db.execute("SELECT digest FROM idempotency WHERE ext_id = 'golden-1'")
    finally:
        db.close()
    assert digest == GOLDEN_DIGEST


# -- the settlement service's settings ----------------------------------------------------------


async def test_settlement_applies_its_company_token_wallet_and_overtrading_settings(
    make_gateway: GatewayFactory,
) -> None:
    """settlement_token and settlement_company_ids refuse a request without the bearer token or
    from another company; adjustments move the credit (settlement_field's default) of an account
    in settlement_groups, and an overtrading loss larger than the wallet takes what is there
    (deduct_available)."""
    h = await settlement_gateway(
        make_gateway, settlement_token="s3cret", settlement_company_ids=(COMPANY,)
    )
    tcp = await h.client()
    await fund(tcp, h, LOGIN, credit=100)
    bearer = "Bearer s3cret"
    async with aiohttp.ClientSession() as http:
        platform = Platform(base_url(h), http)
        no_token = await platform.adjust(adjustment(LOGIN, "1"))
        other = await platform.adjust(adjustment(LOGIN, "1"), authorization=bearer, companyId="2")
        assert [(a["code"], a["msg"]) for a in (no_token, other)] == [
            ("FORBIDDEN", "missing or wrong bearer token"),
            ("FORBIDDEN", "companyId 2 is not accepted"),
        ]
        opened = await platform.adjust(adjustment(LOGIN, "10"), authorization=bearer)
        assert opened["code"] == "0", opened
        loss = adjustment(LOGIN, "-500", "ABNORMAL_OVERTRADING")
        taken = await platform.adjust(loss, authorization=bearer)
        assert (taken["code"], taken["data"]["amount"]) == ("0", "-90.00")
    account = await tcp.ok("GetAccountByLogin", {"login": LOGIN})
    assert (account["balance"], account["credit"]) == (0.0, 0.0)


async def test_the_settlement_answer_budget_is_kept_to_the_millisecond(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """An adjustment whose commit is held is answered SERVICE_UNAVAILABLE when
    settlement_answer_budget_ms has passed on the gateway's clock, not a millisecond before."""
    h = await settlement_gateway(
        make_gateway, gated=True, clock=frozen_clock, settlement_answer_budget_ms=2500
    )
    probe = await h.client()
    await fund(probe, h, LOGIN)
    store = ledger(h)
    store.commit_started.clear()
    store.hold()
    service = h.gateway.settlement
    async with aiohttp.ClientSession() as http:
        platform = Platform(base_url(h), http)
        headers = {"timestamp": str(int(frozen_clock.wall() * 1000))}
        pending = asyncio.ensure_future(platform.adjust(adjustment(LOGIN, "1"), **headers))
        assert await asyncio.to_thread(store.commit_started.wait, WAIT_S)
        frozen_clock.advance(2.499)
        for _ in range(3):  # round trips on the loop: a budget that ran out would answer now
            assert (await probe.ok("HealthCheck"))["status"] == "ok"
        assert service.past_budget == 0 and not pending.done()
        frozen_clock.advance(0.001)
        late = await asyncio.wait_for(pending, WAIT_S)
        store.release()
    assert late["code"] == "SERVICE_UNAVAILABLE"
    assert service.past_budget == 1


async def test_settlement_refuses_new_requests_once_the_drain_starts(
    make_gateway: GatewayFactory,
) -> None:
    """While the drain waits for a TCP request in flight (the main loop still takes operations),
    a new settlement request is already refused SERVICE_UNAVAILABLE and moves nothing."""
    h = await settlement_gateway(make_gateway, gated=True)
    client = await h.client()
    await fund(client, h, LOGIN, credit=100)
    store = ledger(h)
    store.commit_started.clear()
    store.hold()
    in_flight = client.send("CreditIn", {"login": LOGIN, "amount": 1.0, "comment": "c"})
    assert await asyncio.to_thread(store.commit_started.wait, WAIT_S)
    drain = await start_shutdown(h)
    async with aiohttp.ClientSession() as http:
        refused = await Platform(base_url(h), http).adjust(adjustment(LOGIN, "5"))
    assert (refused["code"], refused["msg"]) == (
        "SERVICE_UNAVAILABLE",
        "the gateway is shutting down",
    )
    store.release()
    assert (await asyncio.wait_for(in_flight, WAIT_S))["status"] == 200
    await asyncio.wait_for(drain, WAIT_S)
    account = h.gateway.runtime.account(LOGIN)
    assert account is not None and account.credit == 101
