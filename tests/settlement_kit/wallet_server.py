"""A `Wallet` served over real HTTP/1.1 on a free port: asyncio streams and h11 (no hand-written
HTTP parsing), keep-alive, one request at a time per connection as HTTP/1.1 has it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

import h11
import orjson

from .wallets import Wallet

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


class WalletServer:
    def __init__(self, wallet: Wallet) -> None:
        self.wallet = wallet
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api"

    async def start(self) -> WalletServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            await self._converse(h11.Connection(h11.SERVER), reader, writer)
        except (h11.RemoteProtocolError, ConnectionError):
            pass  # the client went away mid-request (a timed-out platform request does)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _converse(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request, body = event, bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                await self._respond(conn, writer, request, bytes(body))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            else:  # ConnectionClosed
                return

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        path = request.target.decode().partition("?")[0]
        reply = self.wallet.handle(request.method.decode(), path, headers, body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        payload = orjson.dumps(reply.body) if reply.body is not None else b'{"detail":"error"}'
        response = h11.Response(
            status_code=reply.status,
            headers=[("content-type", "application/json"), ("content-length", str(len(payload)))],
            reason=_REASONS.get(reply.status, b""),
        )
        writer.write(conn.send(response) + conn.send(h11.Data(data=payload)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()


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
