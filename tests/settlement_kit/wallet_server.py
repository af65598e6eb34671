"""A `Wallet` served over real HTTP/1.1 on a free port: aiohttp's low-level server (no router:
every method and path reaches the wallet, which answers 404/405 itself), keep-alive, one request
at a time per connection as HTTP/1.1 has it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import orjson
from aiohttp import web

from .wallets import Wallet

SHUTDOWN_S = 0.2  # at close, a reply still held back (Faults.slow_s) is dropped after this


class WalletServer:
    def __init__(self, wallet: Wallet) -> None:
        self.wallet = wallet
        self._runner: web.ServerRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        assert self._runner is not None
        return f"http://127.0.0.1:{self._port}/api"

    async def start(self) -> WalletServer:
        server = web.Server(self._respond, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_S)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _respond(self, request: web.BaseRequest) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        path = request.raw_path.partition("?")[0]
        body = await request.read()
        reply = self.wallet.handle(request.method, path, headers, body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        payload = orjson.dumps(reply.body) if reply.body is not None else b'{"detail":"error"}'
        return web.Response(status=reply.status, body=payload, content_type="application/json")


@contextlib.asynccontextmanager
async def serving(wallet: Wallet) -> AsyncIterator[WalletServer]:
    server = await WalletServer(wallet).start()
    try:
        yield server
    finally:
        await server.close()


@contextlib.contextmanager
def serving_in_thread(wallet: Wallet) -> Iterator[str]:
    """The server on its own loop in a thread, for tests of `main()` (which runs its own
    loop); yields the base URL. Read `wallet` only after the block ends."""
    loop = asyncio.new_event_loop()
    started: list[WalletServer] = []
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        started.append(loop.run_until_complete(WalletServer(wallet).start()))
        ready.set()
        loop.run_forever()
        loop.run_until_complete(started[0].close())
        loop.close()

    thread = threading.Thread(target=serve, name="wallet-server", daemon=True)
    thread.start()
    assert ready.wait(5), "the wallet server did not start"
    try:
        yield started[0].url
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
