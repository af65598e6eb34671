"""One client connection: bytes in, frames out, its session, timers and flow control.

The read path is feed-then-handle. Reads are answered as their frame is handled, unless a write
received before them on this connection is still undecided: then they are held until it is, so a
connection reads its own writes. Requests that go through the main loop are answered when their
future settles (finance) or their task ends (AddUser), so a Sync request held open never blocks
the requests behind it. Answers and events are queued and written once per loop turn.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections import deque
from collections.abc import Callable
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

import structlog

from ..clock import Cancellable
from ..commands.dispatch import (
    Prepared,
    answer_deferred,
    answer_later,
    answer_now,
    prepare,
    success_frame,
)
from ..protocol.codec import Envelope, EnvelopeError, encode_error, parse_request
from ..protocol.errors import (
    FrameTooLarge,
    GatewayError,
    InternalError,
    InvalidToken,
    ShuttingDown,
    SyncTimeout,
    TooManyRequests,
)
from ..protocol.framing import FrameDecoder
from ..session.session import Session
from ..waiters import SessionGone

if TYPE_CHECKING:
    from .app import Gateway

log = structlog.get_logger("manager_gateway.connection")
_ids = itertools.count(1)


class Connection(asyncio.Protocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.conn_id = next(_ids)
        self.metrics = gateway.metrics
        self.session = Session(self.metrics.sessions_by_type)
        self.decoder = FrameDecoder(self.settings.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        # Requests waiting for the main loop: tasks (AddUser) and deferred handlers' futures.
        self.tasks: set[asyncio.Future[Any]] = set()
        self.log = log
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._largest_pending_frame = 0
        self._closed = False
        self._auth_timer: Cancellable | None = None
        self._frame_timer: Cancellable | None = None
        self._partial_since = 0.0
        self._listening = False  # registered with the hub as an event listener
        # Read-your-writes: this connection's writes not yet decided, by arrival number (a dict
        # keeps them oldest first), and the reads held behind them with the number of the last
        # write received before each.
        self._writes_received = 0
        self._undecided: dict[int, None] = {}
        self._held_reads: deque[tuple[int, Envelope, Prepared, float]] = deque()
        self._release_scheduled = False
        self.address = "?"  # the peer's IP address, once connected

    # -- lifecycle ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so this is a cast, not a check.
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        self.log = log.bind(conn_id=self.conn_id, peer=f"{peer[0]}:{peer[1]}" if peer else "?")
        refused = self.gateway.admit(self)
        if refused is not None:
            self.log.warning("connection_refused", reason=refused)
            self._closed = True
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._auth_timer = self.gateway.clock.call_later(
            self.settings.auth_timeout_s, self._on_auth_timeout
        )
        self.log.info("connection_opened")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for timer in (self._auth_timer, self._frame_timer):
            if timer is not None:
                timer.cancel()
        # Requests already received still reach the main loop (their tasks are not cancelled):
        # a closed connection loses its answers, never its operations. Sync waiters go now.
        self.session.close()
        self._held_reads.clear()  # nobody to answer; their writes still complete
        self.gateway.waiters.fail_session(self)
        self.gateway.forget(self)
        self.log.info("connection_closed", error=str(exc) if exc else None)

    def close(self, reason: str) -> None:
        """Flush what is queued, then close."""
        if self._closed or self.transport is None:
            return
        self.log.info("connection_closing", reason=reason)
        self._flush()
        self._closed = True
        self.transport.close()

    # -- input -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as error:
            for frame in error.completed:  # the frames before the oversized one still count
                self._handle(frame)
            self.send(encode_error(error, None))
            self.metrics.invalid_frame(error.status, perf_counter())
            self.close("frame_too_large")
            return
        for frame in frames:
            self._handle(frame)
            if self._closed:
                return
        if frames:
            self._update_listening()
        self._watch_partial_frame(bool(frames))

    def _update_listening(self) -> None:
        """Tell the hub when this session starts or stops hearing events (a token was bound, or
        the event channels changed); checked once per read, not per event."""
        session = self.session
        listening = session.access is not None and bool(session.event_channels)
        if listening != self._listening:
            self._listening = listening
            self.gateway.hub.set_listening(self, listening)

    def _handle(self, frame: bytes) -> None:
        started = perf_counter()
        try:
            request = parse_request(frame)
        except EnvelopeError as exc:
            self.log.debug("request_rejected", error=exc.error.code, message=exc.error.message)
            self.send(encode_error(exc.error, exc.ext_id))
            self.metrics.invalid_frame(exc.error.status, started)
            return
        try:
            if self.gateway.draining:
                raise ShuttingDown()
            # Writes stay pending until the main loop decides them; reads answer at once, unless
            # a write received before them on this connection is still undecided.
            prepared = prepare(
                self.gateway.services, self.gateway.tokens, self.session, self, request
            )
            if isinstance(prepared, bytes):
                self.send(prepared)
                self.metrics.request(request.command, 200, started)
            elif prepared.spec.reads_state:
                if not self._undecided and prepared.is_immediate:
                    self._answer_read(request, prepared, started)
                elif self._pending() >= self.settings.max_inflight:
                    raise TooManyRequests()
                elif not self._undecided:
                    self._answer_read(request, prepared, started)
                else:
                    self._held_reads.append((self._writes_received, request, prepared, started))
            elif prepared.is_immediate:
                self._answer_read(request, prepared, started)
            elif self._pending() >= self.settings.max_inflight:
                prepared.ctx.release_turn()
                raise TooManyRequests()
            elif prepared.spec.deferred:
                decided = prepared.ctx.decided = self._track_write()
                try:
                    future = answer_deferred(prepared)
                except BaseException:
                    decided()  # refused before it reached the main loop
                    raise
                self.tasks.add(future)
                future.add_done_callback(partial(self._deferred_done, request, started))
            else:
                decided = prepared.ctx.decided = self._track_write()
                task = asyncio.get_running_loop().create_task(
                    self._run(request, prepared, started, decided)
                )
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except GatewayError as error:
            self._refused(request, error, started)
        except SessionGone:
            pass
        except Exception as error:
            self._failed(request, error, started)

    async def _run(
        self,
        request: Envelope,
        prepared: Prepared,
        started: float,
        decided: Callable[[], None] | None,
    ) -> None:
        try:
            frame = await answer_later(prepared)
        except GatewayError as error:
            self._refused(request, error, started)
            return
        except SessionGone:
            return
        except Exception as error:
            self._failed(request, error, started)
            return
        finally:  # decided, even when it failed before reaching the main loop (hashing)
            if decided is not None:
                decided()
        self.send(frame)
        self.metrics.request(request.command, 200, started)

    def _answer_read(self, request: Envelope, prepared: Prepared, started: float) -> None:
        if not prepared.is_immediate:  # it may read the ledger: a task, answered when done
            task = asyncio.get_running_loop().create_task(
                self._run(request, prepared, started, None)
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        try:
            frame = answer_now(prepared)
        except GatewayError as error:
            self._refused(request, error, started)
            return
        except Exception as error:
            self._failed(request, error, started)
            return
        self.send(frame)
        self.metrics.request(request.command, 200, started)

    # -- read-your-writes --------------------------------------------------------------------

    def _pending(self) -> int:
        """Requests received and not yet answered (max_inflight counts them)."""
        return len(self.tasks) + len(self._held_reads)

    def _track_write(self) -> Callable[[], None]:
        """Number a write as it arrives; the callback that marks it decided (safe to call twice:
        the main loop and a failure path may both report it)."""
        self._writes_received += 1
        number = self._writes_received
        self._undecided[number] = None
        return partial(self._write_decided, number)

    def _write_decided(self, number: int) -> None:
        self._undecided.pop(number, None)
        if self._held_reads and not self._release_scheduled:
            # Next turn, so the write's own answer (its future's callback) is queued first.
            self._release_scheduled = True
            asyncio.get_running_loop().call_soon(self._release_reads)

    def _release_reads(self) -> None:
        """Answer, in arrival order, the held reads whose earlier writes are all decided."""
        self._release_scheduled = False
        oldest_undecided = next(iter(self._undecided), None)
        held = self._held_reads
        while held and (oldest_undecided is None or held[0][0] < oldest_undecided):
            _, request, prepared, started = held.popleft()
            self._answer_read(request, prepared, started)

    def _deferred_done(
        self, request: Envelope, started: float, future: asyncio.Future[Any]
    ) -> None:
        self.tasks.discard(future)
        if future.cancelled():  # its waiter was dropped with the session: no one to answer
            return
        error = future.exception()
        if error is None:
            self.send(success_frame(request.ext_id, future.result()))
            self.metrics.request(request.command, 200, started)
        elif isinstance(error, GatewayError):
            self._refused(request, error, started)
        elif not isinstance(error, SessionGone):
            self._failed(request, error, started)

    def _failed(self, request: Envelope, error: BaseException, started: float) -> None:
        """An unexpected error: logged with its traceback, answered 500."""
        self.log.error(
            "request_failed", ext_id=request.ext_id, command=request.command, exc_info=error
        )
        self.send(encode_error(InternalError(), request.ext_id))
        self.metrics.request(request.command, 500, started)

    def _refused(self, request: Envelope, error: GatewayError, started: float) -> None:
        access = self.session.access
        # Debug, not info: a client can be refused thousands of times a second (a burst of Sync
        # timeouts, a misbehaving integration), and a log line costs more than the refusal.
        # The counts are in the metrics; the waiter registry logs each timeout sweep.
        self.log.debug(
            "sync_timeout" if isinstance(error, SyncTimeout) else "command_rejected",
            ext_id=request.ext_id,
            command=request.command,
            session=f"{access.subject}/{int(access.type)}" if access else None,
            status=error.status,
            error=error.code,
            message=error.message,
            data=error.data,
        )
        self.send(encode_error(error, request.ext_id))
        self.metrics.request(request.command, error.status, started)
        if (
            isinstance(error, InvalidToken)
            and self.session.auth_failures >= self.settings.max_auth_failures
        ):
            penalty_s = self.gateway.auth_throttle.penalize(self.address)
            self.log.warning("auth_penalty", address=self.address, penalty_s=penalty_s)
            self.close("too_many_auth_failures")

    # -- timers ------------------------------------------------------------------------------

    def _on_auth_timeout(self) -> None:
        self._auth_timer = None
        if not self.session.ever_authenticated:
            self.close("auth_timeout")

    def _watch_partial_frame(self, completed_frames: bool) -> None:
        """A partial frame must complete within frame_timeout_s of the last frame boundary."""
        if not self.decoder.has_partial:
            if self._frame_timer is not None:  # a frame boundary: the next partial starts afresh
                self._frame_timer.cancel()
                self._frame_timer = None
            return
        now = self.gateway.clock.monotonic()
        if completed_frames or self._frame_timer is None:
            self._partial_since = now
        if self._frame_timer is None:
            self._frame_timer = self.gateway.clock.call_later(
                self.settings.frame_timeout_s, self._on_frame_timer
            )

    def _on_frame_timer(self) -> None:
        self._frame_timer = None
        if not self.decoder.has_partial:
            return
        waited = self.gateway.clock.monotonic() - self._partial_since
        remaining = self.settings.frame_timeout_s - waited
        if remaining <= 0:
            self.close("frame_timeout")
        else:
            self._frame_timer = self.gateway.clock.call_later(remaining, self._on_frame_timer)

    # -- output ------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue a frame; everything queued in one loop turn goes out in one write."""
        if self._closed:
            return
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.transport is None or self.transport.is_closing():
            self._out.clear()
            return
        transport = self.transport
        # A single frame may legitimately be bigger than the limit (a 50,000-row filter page),
        # so the limit counts what is buffered beyond the largest frame still pending. That
        # allowance lasts until the peer has read everything.
        if transport.get_write_buffer_size() == 0:
            self._largest_pending_frame = 0
        self._largest_pending_frame = max(self._largest_pending_frame, *map(len, self._out))
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        transport.write(data)
        buffered = transport.get_write_buffer_size()
        if buffered > self.settings.max_outbound_bytes + self._largest_pending_frame:
            # The peer stopped reading; holding more would let it exhaust our memory.
            self.log.warning("slow_consumer_closed", buffered=buffered)
            self.gateway.slow_consumer_disconnects += 1
            self._closed = True
            transport.abort()
