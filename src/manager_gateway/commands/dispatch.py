"""From a parsed envelope to a response frame: lookup, authentication, role, validation, handler."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from ..protocol.codec import Envelope, encode_ok, encode_ok_raw
from ..protocol.errors import PermissionDenied, UnknownCommand
from ..protocol.models import validate
from ..session.session import Session
from ..session.tokens import TokenService
from .context import RawJson, RequestContext, Services
from .registry import COMMANDS, HEALTH_CHECK
from .subscriptions import health_check


async def dispatch(
    services: Services,
    tokens: TokenService,
    session: Session,
    session_key: Hashable,
    request: Envelope,
) -> bytes:
    """Run one request; returns its success frame or raises a `GatewayError`."""
    name = request.command
    spec = COMMANDS.get(name)
    if spec is None:
        if name == HEALTH_CHECK:
            return encode_ok(request.ext_id, health_check(int(services.clock.wall() * 1000)))
        raise UnknownCommand(f"unknown command {name!r}")
    access = session.authenticate(request.token, tokens, services.clock.wall())
    if access.type not in spec.roles:
        raise PermissionDenied(f"{name} is not allowed for session type {int(access.type)}")
    data = validate(spec.model, request.data)
    ctx = RequestContext(services, session, session_key, access, name, request.ext_id)
    if not spec.changes_state:
        result = await spec.handler(ctx, data)
    else:
        ctx.after, ctx.turn = session.submit_tail, asyncio.get_running_loop().create_future()
        session.submit_tail = ctx.turn
        try:
            result = await spec.handler(ctx, data)
        finally:
            if not ctx.turn.done():  # refused or cancelled before submitting: let the next go
                ctx.turn.set_result(None)
    if isinstance(result, RawJson):
        return encode_ok_raw(request.ext_id, result.data)
    return encode_ok(request.ext_id, result)
