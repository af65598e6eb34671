"""Shared fixtures: a real gateway on a free port, real TCP clients, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import structlog
import structlog.testing

from manager_gateway.config import Settings, load_settings
from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.threaded import ThreadedLedger
from manager_gateway.ledger.verify import verify_ledger, verify_postgres
from manager_gateway.runtime.storage import Storage
from manager_gateway.server.app import Gateway
from manager_gateway.session.access import SessionType

from .fakes import FakeClock, GatedLedger, storage_of, threaded
from .postgres import PostgresServer, execute, postgres_server

DEMO_USER = {
    "group": "demo",
    "name": "Test User",
    "password": "secret123",
    "leverage": 100,
    "enable": 1,
    "email": "user@example.com",
}

# How long a poll waits for what another thread or process brings about (a commit on the
# writer thread, a signal handled). Each round is a real request round trip, not a sleep; the
# bound is time, not a count of rounds, because a round trip is far quicker than an fsync.
POLL_S = 10.0
PORT_ATTEMPTS = 5


def money(login: int, balance: float, credit: float) -> dict[str, Any]:
    """The money fields of an account with no open positions."""
    return {
        "login": login,
        "balance": balance,
        "credit": credit,
        "equity": balance + credit,
        "margin": 0.0,
        "margin_free": balance + credit,
        "margin_level": 0.0,
    }


_EXT_IDS = itertools.count(1)  # unique across clients: extIDs are idempotency keys per subject


class Client:
    """A real TCP client: sends requests, matches answers by extID, collects pushed events."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.orphans: list[dict[str, Any]] = []  # answers with extID null or unasked for
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, token: str | None = None) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=64 * 1024 * 1024)
        client = cls(reader, writer)
        client.token = token
        return client

    token: str | None

    async def _read(self) -> None:
        try:
            while line := await self.reader.readline():
                assert line.endswith(b"\r\n"), line
                msg = orjson.loads(line)
                if "event" in msg:
                    assert "extID" not in msg
                    self.events.put_nowait(msg)
                    continue
                future = self.responses.get(msg.get("extID"))  # type: ignore[arg-type]
                if future is None or future.done():
                    self.orphans.append(msg)
                else:
                    future.set_result(msg)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()

    def next_ext_id(self) -> str:
        return f"req-{next(_EXT_IDS)}"

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def expect(self, ext_id: str) -> asyncio.Future[dict[str, Any]]:
        """The future of the next answer under `ext_id` (a resend gets a fresh one)."""
        future = self.responses.get(ext_id)
        if future is None or future.done():
            future = self.responses[ext_id] = asyncio.get_running_loop().create_future()
        return future

    def send(
        self,
        command: str,
        data: dict[str, Any] | None = None,
        ext_id: str | None = None,
        token: object = ...,
    ) -> asyncio.Future[dict[str, Any]]:
        """Send one request; the future resolves with its answer."""
        ext_id = ext_id or self.next_ext_id()
        request: dict[str, Any] = {"command": command, "extID": ext_id, "data": data or {}}
        token = self.token if token is ... else token
        if token is not None:
            request["__token"] = token
        future = self.expect(ext_id)
        self.writer.write(orjson.dumps(request) + b"\r\n")
        return future

    async def request(
        self, command: str, data: dict[str, Any] | None = None, *, timeout: float = 10, **kw: Any
    ) -> dict[str, Any]:
        """Send one request and wait for its answer: ConnectionError as soon as the server
        closes the connection without answering, TimeoutError after `timeout`."""
        answer = self.send(command, data, **kw)
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait(
                {answer, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed.cancel()
        if answer.done():  # an answer read just before the close still counts
            return answer.result()
        answer.cancel()
        if self.closed.is_set():
            raise ConnectionError(f"{command}: the connection closed before its answer")
        raise TimeoutError(f"{command}: no answer within {timeout} s")

    async def ok(self, command: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        """Request and assert a 200; returns `data`."""
        answer = await self.request(command, data, **kw)
        assert answer["status"] == 200, answer
        return answer["data"]

    async def next_event(self, timeout: float = 5) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    def drain_events(self) -> list[dict[str, Any]]:
        events = []
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return events

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        await self._task


class Harness:
    """A running in-process gateway and helpers to talk to it."""

    def __init__(self, gateway: Gateway, data_dir: Path) -> None:
        self.gateway = gateway
        self.data_dir = data_dir
        self.clients: list[Client] = []

    @property
    def port(self) -> int:
        return self.gateway.port

    def token(
        self,
        role: SessionType = SessionType.MANAGER,
        login: int | str = 1,
        groups: list[str] | None = None,
        ttl_s: int = 3600,
    ) -> str:
        return self.gateway.tokens.issue(
            str(login), role, groups or ["*"], int(time.time()) + ttl_s
        )

    async def client(self, token: str | None = None, **token_kw: Any) -> Client:
        """A connected client; its token defaults to a fresh manager token with all groups."""
        client = await Client.connect(self.port, token or self.token(**token_kw))
        self.clients.append(client)
        return client

    async def add_user(
        self, client: Client, login: int, group: str = "demo", **fields: Any
    ) -> None:
        await client.ok("AddUser", {**DEMO_USER, "login": login, "group": group, **fields})

    def verification(self) -> tuple[list[str], str]:
        """`ledger verify` of this gateway's ledger, whichever engine: (problems, summary)."""
        url = self.gateway.settings.ledger_url
        return verify_postgres(url) if url else verify_ledger(self.data_dir)

    def stored(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of this gateway's ledger, read behind its back as another process would, on
        either engine (a plain SELECT reads the same on both)."""
        url = self.gateway.settings.ledger_url
        if url:
            return execute(url, sql)
        db = sqlite3.connect(f"file:{self.data_dir / LEDGER_FILE}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def verify(self) -> list[str]:
        """`ledger verify`'s problems with this gateway's ledger."""
        return self.verification()[0]

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()


GatewayFactory = Callable[..., Awaitable[Harness]]


def poll_rounds() -> Iterator[None]:
    """The rounds of a poll: at least one, then more until POLL_S has passed."""
    deadline = time.monotonic() + POLL_S
    yield
    while time.monotonic() < deadline:
        yield


async def wait_until(probe: Client, condition: Callable[[], bool]) -> None:
    """Poll with HealthCheck round trips until `condition()` holds (bounded)."""
    for _ in poll_rounds():
        if condition():
            return
        await probe.ok("HealthCheck")
    assert condition(), "condition not reached within the polling bound"


def ledger(gw: Harness) -> GatedLedger:
    storage = storage_of(gw.gateway.ledger)
    assert isinstance(storage, GatedLedger)
    return storage


def unused_port() -> int:
    """A TCP port free at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def with_free_port(make_gateway: GatewayFactory, setting: str, **settings: Any) -> Harness:
    """A gateway whose `setting` (metrics_port, settlement_port) is a port that was free a moment
    ago, another if it was taken since: 0 means off for those, so the gateway cannot pick one."""
    for _ in range(PORT_ATTEMPTS):
        try:
            return await make_gateway(**{setting: unused_port()}, **settings)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise AssertionError(f"no free port for {setting}")


@pytest.fixture
def frozen_clock() -> FakeClock:
    """A FakeClock frozen at the current whole second, so tokens issued from real time stay
    valid; tests move it to expire tokens."""
    return FakeClock(wall=float(int(time.time())))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (tests/postgres.py)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def ledger_url() -> str:
    """The ledger a test's gateways use: "" is the embedded SQLite. A module that runs on both
    engines imports `on_both_engines` (tests/postgres.py), which replaces this there."""
    return ""


@pytest.fixture
async def make_gateway(tmp_path: Path, ledger_url: str) -> AsyncIterator[GatewayFactory]:
    """Start gateways on free ports: `await make_gateway(sync_timeout_ms=200, gated=True)`.

    Keyword arguments are settings; `gated=True` puts a `GatedLedger` under the main loop;
    `data_dir` reuses a directory (a restart). Everything is shut down at the end of the test.
    """
    harnesses: list[Harness] = []

    async def start(
        *, gated: bool = False, storage: Storage | None = None, clock: Any = None, **settings: Any
    ) -> Harness:
        data_dir = Path(settings.pop("data_dir", tmp_path / "data"))
        settings.setdefault("ledger_url", ledger_url)
        if settings["ledger_url"] and (gated or storage is not None):
            raise AssertionError("test doubles of the ledger are SQLite's: not with ledger_url")
        config: Settings = load_settings(
            None,
            host="127.0.0.1",
            port=0,
            data_dir=data_dir,
            # The product default: a test sees the fsyncs an operator gets. Measured against
            # NORMAL on 168 e2e tests, interleaved: NORMAL 34.5 and 48.7 s, FULL 37.0 and 41.2 s.
            ledger_synchronous=settings.pop("ledger_synchronous", "FULL"),
            # The settlement listener only where a test asks for it (a free port of its own).
            settlement_port=settings.pop("settlement_port", 0),
            **settings,
        )
        if gated:
            storage = GatedLedger(data_dir, config.ledger_synchronous)
        gateway = Gateway(config, clock=clock, ledger=threaded(storage))
        await gateway.start()
        harness = Harness(gateway, data_dir)
        harnesses.append(harness)
        return harness

    yield start
    for harness in harnesses:
        engine = harness.gateway.ledger
        if isinstance(engine, ThreadedLedger) and isinstance(engine.storage, GatedLedger):
            engine.storage.release()
        await harness.close_clients()
        await harness.gateway.shutdown()


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Harness:
    """A gateway with default settings."""
    return await make_gateway()


@contextlib.contextmanager
def captured_log(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType
) -> Iterator[list[dict[str, Any]]]:
    """The entries `module.log` logs inside the block. The module gets a fresh logger under the
    capture, whatever an earlier in-process CLI test configured."""
    with structlog.testing.capture_logs() as logs:
        monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))
        yield logs
