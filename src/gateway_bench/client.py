"""A small, fast client of the gateway protocol: one `asyncio.Protocol` per TCP connection.

Requests are JSON objects ending in `\\r\\n`; answers are matched by `extID`, never by arrival
order (docs/protocol.md sections 1 and 2). A waiter is registered *before* the frame is written,
so an answer can never overtake its registration; an answer nobody waits for (unknown, late or
duplicate) is counted in `orphans` and dropped. Pushed frames (they carry `event`, no `extID`) are
counted in `events_received` and handed to `on_event`. Frames that are not JSON objects are
counted in `bad_frames`.

Two ways to wait for an answer:

* `send()` / `request()` give a future: simple, one task switch per answer.
* `send_cb()` calls a callback straight from `data_received`: no future, no task switch, and
  frames sent from inside the callback are gathered into one `write()` per read. The closed-loop
  load generator uses it (see `loadgen.py` for the measurement that justified it).

When the connection drops, every future fails with `ConnectionError` and every callback is called
with a `ConnectionError` instead of an answer.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import Any, cast

import orjson

EventHandler = Callable[[dict[str, Any]], None]
# Called with the request's extID and either its answer or the ConnectionError that ended it.
AnswerCallback = Callable[[str, dict[str, Any] | ConnectionError], None]

_CRLF = b"\r\n"
_client_ids = itertools.count(1)


class GatewayClient(asyncio.Protocol):
    """One TCP connection to a gateway; build it with `await GatewayClient.connect(host, port)`."""

    def __init__(self, *, on_event: EventHandler | None = None) -> None:
        self.on_event = on_event
        self.on_orphan: EventHandler | None = None  # sees each answer counted in `orphans`
        self.events_received = 0
        self.orphans = 0
        self.bad_frames = 0  # frames that were not a JSON object: counted, never fatal
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]] | AnswerCallback] = {}
        self._buffer = b""
        self._batch: list[bytes] | None = None  # set while data_received runs: writes gather here
        self._closed_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ext_prefix = f"c{next(_client_ids)}-"
        self._ext_ids = itertools.count(1)

    @classmethod
    async def connect(
        cls, host: str, port: int, *, on_event: EventHandler | None = None
    ) -> GatewayClient:
        """Open a connection; raises `OSError` when the server cannot be reached."""
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(lambda: cls(on_event=on_event), host, port)
        return client

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so this is a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        *frames, self._buffer = data.split(b"\n")
        batch: list[bytes] = []
        self._batch = batch
        try:
            for frame in frames:
                if len(frame) > 1:  # skips blank lines ("" or a lone "\r")
                    self._dispatch(frame)
        finally:
            self._batch = None
            if batch and self._transport is not None and not self.closed:
                self._transport.write(b"".join(batch))

    def _dispatch(self, frame: bytes) -> None:
        try:
            message = orjson.loads(frame)  # a trailing "\r" is JSON whitespace
        except orjson.JSONDecodeError:
            self.bad_frames += 1
            return
        if type(message) is not dict:
            self.bad_frames += 1
            return
        if "event" in message:
            self.events_received += 1
            if self.on_event is not None:
                self.on_event(message)
            return
        ext_id = message.get("extID")
        waiter = self._pending.pop(ext_id, None) if type(ext_id) is str else None
        if waiter is None:
            self.orphans += 1
            if self.on_orphan is not None:
                self.on_orphan(message)
        elif isinstance(waiter, asyncio.Future):
            if not waiter.done():  # its requester may have given up (cancelled)
                waiter.set_result(message)
        else:
            waiter(cast(str, ext_id), message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        pending, self._pending = self._pending, {}
        error = ConnectionError(f"connection lost: {exc}" if exc else "connection closed")
        for ext_id, waiter in pending.items():
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_exception(error)
            else:
                waiter(ext_id, error)
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    # -- sending -----------------------------------------------------------------------------

    def send(
        self, command: str, data: dict[str, Any], *, ext_id: str, token: str | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Send one request; the future resolves with its parsed answer."""
        future = self.expect(ext_id)  # before the write: the answer cannot overtake it
        if not self.closed:
            self._write(encode_request(command, data, ext_id, token))
        return future

    def send_cb(
        self,
        command: str,
        data: dict[str, Any],
        ext_id: str,
        callback: AnswerCallback,
        *,
        token: str | None = None,
    ) -> None:
        """Send one request; `callback(ext_id, answer)` runs straight from `data_received`."""
        self.send_frame_cb(encode_request(command, data, ext_id, token), ext_id, callback)

    def send_frame_cb(self, frame: bytes, ext_id: str, callback: AnswerCallback) -> None:
        """`send_cb` for a frame encoded by the caller; `ext_id` must be the one inside it."""
        if self.closed:
            callback(ext_id, ConnectionError("connection closed"))
            return
        self._pending[ext_id] = callback
        self._write(frame)

    async def request(
        self,
        command: str,
        data: dict[str, Any],
        *,
        ext_id: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Send and await the answer; raises `TimeoutError` or `ConnectionError`."""
        ext_id = ext_id or self.next_ext_id()
        future = self.send(command, data, ext_id=ext_id, token=token)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if self._pending.get(ext_id) is future:
                del self._pending[ext_id]  # timed out or cancelled: a late answer is an orphan

    def expect(self, ext_id: str) -> asyncio.Future[dict[str, Any]]:
        """Register a future for the answer to `ext_id` without sending anything: for frames
        written with `send_raw`. Call it before the write."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(ConnectionError("connection closed"))
        else:
            self._pending[ext_id] = future
        return future

    def send_raw(self, frame: bytes) -> None:
        """Write pre-encoded bytes (whole frames ending in `\\r\\n`). No waiter is registered:
        use `expect()` first, or their answers count as orphans."""
        if not self.closed:
            self._write(frame)

    def forget(self, ext_id: str) -> bool:
        """Stop waiting for `ext_id` (its caller gave up); a later answer counts as an orphan."""
        return self._pending.pop(ext_id, None) is not None

    def pending_count(self) -> int:
        return len(self._pending)

    def next_ext_id(self) -> str:
        """An extID unique within this process (extIDs are idempotency keys: never reuse one)."""
        return f"{self._ext_prefix}{next(self._ext_ids)}"

    def _write(self, frame: bytes) -> None:
        if self._batch is not None:
            self._batch.append(frame)
        elif self._transport is not None:
            self._transport.write(frame)

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; pending requests then fail with `ConnectionError`."""
        if self._transport is not None and not self.closed:
            self.closed = True  # no more writes; connection_lost fails what is still pending
            self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_future)


def encode_request(
    command: str, data: dict[str, Any], ext_id: str, token: str | None = None
) -> bytes:
    """One request frame, `\\r\\n` included."""
    request: dict[str, Any] = {"command": command, "extID": ext_id, "data": data}
    if token is not None:
        request["__token"] = token
    return orjson.dumps(request) + _CRLF
