"""Finance: BalanceIn/Out, CreditIn/Out, their deletes, async and Sync forms.

All twelve commands are one handler shape: build the operation, then either wait for its durable
commit and answer the ack (async form) or hold the request until its trade event (Sync form).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol.models import CommandData
from ..runtime.operations import OpKind
from .context import RawJson, RequestContext

Answer = dict[str, Any] | RawJson
Handler = Callable[[RequestContext, CommandData], Awaitable[Answer]]


def _handler(kind: OpKind, cmd: int, sync: bool) -> Handler:
    async def handle(ctx: RequestContext, data: CommandData) -> Answer:
        op = ctx.operation(kind, data, cmd=cmd)
        if sync:
            return await ctx.run_sync(op)
        ack: dict[str, Any] = (await ctx.run(op))["ack"]
        return ack

    return handle


def finance(cmd: int, sync: bool) -> Handler:
    """BalanceIn/Out, CreditIn/Out (and Sync): `cmd` is the ScaleTrade code, 6 to 9."""
    return _handler(OpKind.FINANCE, int(cmd), sync)  # a plain int: it is stored in records


def delete(credit: bool, sync: bool) -> Handler:
    """DeleteBalance / DeleteCredit (and Sync): reverse a record of that kind."""
    return _handler(OpKind.DELETE, int(credit), sync)
