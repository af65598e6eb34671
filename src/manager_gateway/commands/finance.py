"""Finance: BalanceIn/Out, CreditIn/Out, their deletes, async and Sync forms.

All twelve commands are one deferred handler shape (see registry.CommandSpec): build the operation,
hand it to the main loop, and return the future of the answer: the ack once the operation is
durably committed (async form), or the trade event's data (Sync form).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..protocol.models import CommandData
from ..runtime.operations import OpKind
from .context import RequestContext

Handler = Callable[[RequestContext, CommandData], "asyncio.Future[Any]"]


def _handler(kind: OpKind, cmd: int, sync: bool) -> Handler:
    def handle(ctx: RequestContext, data: CommandData) -> asyncio.Future[Any]:
        op = ctx.operation(kind, data, cmd=cmd, answer="ack")
        return ctx.start_sync(op) if sync else ctx.start(op)

    return handle


def finance(cmd: int, sync: bool) -> Handler:
    """BalanceIn/Out, CreditIn/Out (and Sync): `cmd` is the ScaleTrade code, 6 to 9."""
    return _handler(OpKind.FINANCE, int(cmd), sync)  # a plain int: it is stored in records


def delete(credit: bool, sync: bool) -> Handler:
    """DeleteBalance / DeleteCredit (and Sync): reverse a record of that kind."""
    return _handler(OpKind.DELETE, int(credit), sync)
