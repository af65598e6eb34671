"""Finance: BalanceIn/Out, CreditIn/Out, their deletes, async and Sync forms."""

from __future__ import annotations

from typing import Any

from ..protocol.models import FinanceData, OrderData
from ..runtime.operations import OpKind
from .context import RawJson, RequestContext


def finance(cmd: int, sync: bool) -> Any:
    """The handler of one finance command: `cmd` is its ScaleTrade code (6..9)."""

    async def handle(ctx: RequestContext, data: FinanceData) -> dict[str, Any] | RawJson:
        op = ctx.operation(OpKind.FINANCE, data, cmd=cmd)
        if sync:
            return await ctx.run_sync(op)
        outcome = await ctx.run(op)
        return outcome["ack"]  # type: ignore[no-any-return]

    return handle


def delete(credit: bool, sync: bool) -> Any:
    """The handler of DeleteBalance / DeleteCredit (and Sync): reverses a record of that kind."""

    async def handle(ctx: RequestContext, data: OrderData) -> dict[str, Any] | RawJson:
        op = ctx.operation(OpKind.DELETE, data, cmd=int(credit))
        if sync:
            return await ctx.run_sync(op)
        outcome = await ctx.run(op)
        return outcome["ack"]  # type: ignore[no-any-return]

    return handle
