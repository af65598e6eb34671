"""The gateway process in three phases: `start()`, serve, `shutdown()`.

`Gateway` wires the parts together (ledger, main loop, waiter registry, event hub, listener) and
owns the live connections. Only this package and `cli.py` touch sockets, signals and the process.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog
from aiohttp import web

from ..clock import Clock, LoopClock
from ..commands.context import Services
from ..config import Settings
from ..ledger.postgres import PostgresLedger
from ..ledger.sqlite import SQLiteLedger
from ..ledger.threaded import ThreadedLedger
from ..protocol.errors import ShuttingDown
from ..runtime.mainloop import MainLoop
from ..runtime.storage import Ledger
from ..session.access import Access, SessionType
from ..session.tokens import TokenService, load_or_create_secret
from ..settlement.http import build_app
from ..settlement.rules import Rules
from ..settlement.service import ServiceConfig, SettlementService
from ..waiters import WaiterRegistry
from .connection import Connection
from .hub import EventHub
from .metrics import Metrics, MetricsServer
from .throttle import AuthThrottle

log = structlog.get_logger("manager_gateway.server")

#: Concurrent AddUser password hashes: scrypt holds 16 MiB each; two keep both cores busy.
PASSWORD_HASH_THREADS = 2


def _tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _ledger(settings: Settings, data_dir: Path) -> Ledger:
    """The engine `ledger_url` names: PostgreSQL, else the embedded SQLite in the data dir."""
    if settings.ledger_url:
        return PostgresLedger(settings.ledger_url)
    return ThreadedLedger(
        SQLiteLedger(data_dir, settings.ledger_synchronous, settings.ledger_busy_timeout_ms)
    )


def signing_secret(settings: Settings) -> bytes:
    """The configured secret, else the one kept in (or created in) the data dir."""
    if settings.jwt_secret:
        return settings.jwt_secret.encode()
    return load_or_create_secret(Path(settings.data_dir))


class Gateway:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or LoopClock()
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = signing_secret(settings)
        self.tokens = TokenService(secret)
        self.ledger: Ledger = ledger or _ledger(settings, data_dir)
        self.waiters = WaiterRegistry(self.clock, settings.sync_timeout_ms)
        self.metrics = Metrics()
        self.hub = EventHub(self.clock, self.metrics)
        groups = settings.groups_by_name()
        self.runtime = MainLoop(
            self.ledger,
            self.waiters,
            self.hub,
            self.clock,
            groups,
            settings.idempotency_ttl_s,
            settings.max_batch,
            journal_retention_s=settings.settlement_retention_days * 86400,
            observer=self.metrics,
            window=settings.history_window,
        )
        self._password_hasher = ThreadPoolExecutor(
            max_workers=PASSWORD_HASH_THREADS, thread_name_prefix="password-hash"
        )
        self.services = Services(
            self.runtime,
            self.waiters,
            self.clock,
            groups,
            hashlib.sha256(b"idempotency-digest\0" + secret).digest(),
            self._password_hasher,
        )
        self.settlement = self._settlement_service()
        self._settlement_runner: web.AppRunner | None = None
        self.settlement_port = 0
        self.auth_throttle = AuthThrottle(
            self.clock, settings.auth_penalty_s, settings.auth_penalty_max_s
        )
        self.draining = False
        # False once shutdown gave up waiting for the ledger (its thread may still be stuck).
        self.ledger_finished = True
        self.slow_consumer_disconnects = 0
        self._server: asyncio.Server | None = None
        # The loop the gateway runs on, for the metrics thread's reads of the ledger.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.metrics.watch(self)
        self.metrics_server: MetricsServer | None = None

    def _settlement_service(self) -> SettlementService:
        settings = self.settings
        # The settlement API acts on every account its groups open to it, as a manager would.
        access = Access("settlement", SessionType.MANAGER, settings.settlement_groups, float("inf"))
        rules = Rules(settings.settlement_field, settings.settlement_overtrading, access)
        config = ServiceConfig(
            frozenset(settings.settlement_company_ids),
            settings.settlement_token,
            settings.settlement_max_skew_s,
            settings.settlement_answer_budget_ms / 1000,
        )
        return SettlementService(
            config, self.runtime, rules, self.clock, access, lambda: self.draining
        )

    async def _start_settlement(self) -> None:
        """The settlement HTTP listener, on this loop; off when settlement_port is 0."""
        settings = self.settings
        if not settings.settlement_port:
            return
        app = build_app(
            self.settlement,
            settings.settlement_path_prefix,
            settings.settlement_networks(),
            self.metrics,
        )
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False,
            shutdown_timeout=settings.shutdown_timeout_s,
        )  # fmt: skip
        await runner.setup()
        self._settlement_runner = runner
        site = web.TCPSite(
            runner, settings.settlement_host, settings.settlement_port,
            ssl_context=_tls(settings.settlement_tls_cert_file, settings.settlement_tls_key_file),
            backlog=1024, reuse_address=True,
        )  # fmt: skip
        await site.start()
        self.settlement_port = int(runner.addresses[0][1])  # the bound port, when 0 was asked

    async def _stop_settlement(self) -> None:
        if self._settlement_runner is not None:
            await self._settlement_runner.cleanup()
            self._settlement_runner = None

    @property
    def connections(self) -> set[Connection]:
        return self.hub.connections

    async def start(self) -> None:
        """Load the ledger, start the main loop, listen. `port` is the bound port afterwards."""
        self.loop = asyncio.get_running_loop()
        await self.runtime.start()
        try:
            self._server = await asyncio.get_running_loop().create_server(
                lambda: Connection(self),
                self.settings.host,
                self.settings.port,
                ssl=_tls(self.settings.tls_cert_file, self.settings.tls_key_file),
                backlog=1024,
                reuse_address=True,
            )
            await self._start_settlement()
            if self.settings.metrics_port:
                self.metrics_server = MetricsServer(
                    self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port
                )
        except BaseException:
            if self._server is not None:
                self._server.close()
            await self._stop_settlement()
            await self.runtime.stop()  # e.g. a port is taken: close the ledger cleanly
            self._password_hasher.shutdown(wait=False)
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "gateway_listening",
            host=self.settings.host,
            port=self.port,
            data_dir=str(self.settings.data_dir),
            tls=self.settings.tls_cert_file is not None,
            settlement_port=self.settlement_port or None,
            metrics_port=self.metrics_server.port if self.metrics_server else None,
        )

    def admit(self, connection: Connection) -> str | None:
        """Take a new connection in; else why it is refused."""
        if self.draining:
            refused: str | None = "draining"
        elif len(self.hub.connections) >= self.settings.max_connections:
            refused = "max_connections"
        elif self.auth_throttle.refuses(connection.address):
            refused = "auth_penalty"
        else:
            refused = None
        if refused is not None:
            self.metrics.connections_refused += 1
            return refused
        self.metrics.connections_accepted += 1
        self.hub.connections.add(connection)
        return None

    def forget(self, connection: Connection) -> None:
        self.hub.connections.discard(connection)
        self.hub.listeners.discard(connection)

    async def shutdown(self) -> None:
        """Stop accepting, answer what is in flight, commit what is queued, close everything."""
        if self.draining:
            return
        self.draining = True
        log.info("gateway_draining", connections=len(self.connections))
        if self._server is not None:
            self._server.close()
        in_flight = [task for conn in self.connections for task in conn.tasks]
        if in_flight:
            await asyncio.wait(in_flight, timeout=self.settings.shutdown_timeout_s)
        self.ledger_finished = await self.runtime.stop(self.settings.shutdown_timeout_s)
        await self._stop_settlement()  # its requests are decided now: answer them, then close
        self._password_hasher.shutdown(wait=False)  # its requests are done or abandoned
        # Sync requests still waiting (their event never came) are answered 503 before closing.
        self.waiters.fail_all(ShuttingDown())
        remaining = [task for conn in self.connections for task in conn.tasks]
        if remaining:
            await asyncio.wait(remaining, timeout=self.settings.shutdown_timeout_s)
        for connection in list(self.connections):
            connection.close("shutdown")
        if self._server is not None:
            await self._server.wait_closed()
        if self.metrics_server is not None:  # last: a scrape can watch the drain to the end
            await self.metrics_server.close()
        log.info("gateway_stopped")
