"""From a parsed envelope to a response frame: lookup, authentication, role, validation, handler.

`prepare` does every check synchronously, in arrival order. Plain-function handlers (reads,
subscriptions) then answer at once (`answer_now`); deferred handlers (finance) return the future
of their answer (`answer_deferred`), and coroutine handlers (AddUser) run as a task
(`answer_later`), so a held Sync request blocks nothing behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..protocol.codec import Envelope, encode_ok, encode_ok_raw
from ..protocol.errors import PermissionDenied, UnknownCommand
from ..protocol.models import CommandData, validate
from ..session.session import Session
from ..session.tokens import TokenService
from .context import RequestContext, Services
from .registry import COMMANDS, HEALTH_CHECK, CommandSpec
from .subscriptions import health_check


@dataclass(slots=True)
class Prepared:
    """A request that passed every check and is ready for its handler."""

    spec: CommandSpec
    ctx: RequestContext
    data: CommandData

    @property
    def is_immediate(self) -> bool:
        return not (self.spec.is_async or self.spec.deferred)


def prepare(
    services: Services,
    tokens: TokenService,
    session: Session,
    session_key: Hashable,
    request: Envelope,
) -> Prepared | bytes:
    """Check a request; a finished frame for HealthCheck, else what its handler needs.

    Raises a `GatewayError` for an unknown command, a bad token, a forbidden role or bad data.
    """
    name = request.command
    spec = COMMANDS.get(name)
    if spec is None:
        if name == HEALTH_CHECK:
            now = services.clock.wall()
            session.offer(request.token, tokens, now)
            return encode_ok(request.ext_id, health_check(int(now * 1000)))
        raise UnknownCommand(f"unknown command {name!r}")
    access = session.authenticate(request.token, tokens, services.clock.wall())
    if access.type not in spec.roles:
        raise PermissionDenied(f"{name} is not allowed for session type {int(access.type)}")
    data = validate(spec.model, request.data)
    ctx = RequestContext(services, session, session_key, access, name, request.ext_id)
    if spec.changes_state:
        tail = session.submit_tail
        # A deferred handler with nothing ahead of it submits before control returns to the
        # loop, so nothing behind it can overtake it: it needs no place in the order.
        if not spec.deferred or (tail is not None and not tail.done()):
            # Claim this request's place in the connection's submission order now, in arrival
            # order: it submits after `tail`, and what comes next submits after it.
            ctx.after, ctx.turn = tail, asyncio.get_running_loop().create_future()
            session.submit_tail = ctx.turn
    return Prepared(spec, ctx, data)


def success_frame(ext_id: str, result: Any) -> bytes:
    """The 200 frame for a handler's result: a dict, or `data` already encoded (Sync answers
    reuse the trade event's bytes)."""
    if isinstance(result, bytes):
        return encode_ok_raw(ext_id, result)
    return encode_ok(ext_id, result)


def answer_now(prepared: Prepared) -> bytes:
    """Run a plain-function handler; its success frame."""
    return success_frame(prepared.ctx.ext_id, prepared.spec.handler(prepared.ctx, prepared.data))


def answer_deferred(prepared: Prepared) -> asyncio.Future[Any]:
    """Run a deferred handler; the future of its result (see `success_frame`)."""
    try:
        future: asyncio.Future[Any] = prepared.spec.handler(prepared.ctx, prepared.data)
    except BaseException:
        prepared.ctx.release_turn()  # refused before submitting: let the next request go
        raise
    return future


async def answer_later(prepared: Prepared) -> bytes:
    """Run a coroutine handler; its success frame."""
    ctx = prepared.ctx
    try:
        result = await prepared.spec.handler(ctx, prepared.data)
    finally:
        ctx.release_turn()
    return success_frame(ctx.ext_id, result)
