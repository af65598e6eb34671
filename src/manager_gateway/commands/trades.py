"""Trade records: GetTradeByOrder and MngGetTradesByFilter.

Both read the ledger when the record is older than the main loop's window (history lives on
disk), on the ledger's reader threads: they are coroutines, and never block the event loop.
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import PermissionDenied, TradeNotFound
from ..protocol.models import OrderData, TradesFilterData
from ..runtime.storage import RecordFilter
from .context import RequestContext


async def get_trade_by_order(ctx: RequestContext, data: OrderData) -> dict[str, Any]:
    runtime = ctx.services.runtime
    record = await runtime.record(data.order)
    if record is None:
        raise TradeNotFound(f"order {data.order} not found")
    account = runtime.account(record.login)
    if account is None or not ctx.access.sees_account(record.login, account.group):
        raise PermissionDenied(f"order {data.order} is outside this session's accounts")
    return record.to_wire()


async def get_trades_by_filter(ctx: RequestContext, data: TradesFilterData) -> dict[str, Any]:
    """Current records matching every given filter, newest first; `from`/`to` bound open_time."""
    runtime, access = ctx.services.runtime, ctx.access
    accounts = runtime.state.accounts
    logins: frozenset[int] | None
    if data.login is not None:
        account = accounts.get(data.login)
        seen = account is not None and access.sees_account(data.login, account.group)
        logins = frozenset([data.login] if seen else [])
    else:
        visible = [login for login, a in accounts.items() if access.sees_account(login, a.group)]
        logins = None if len(visible) == len(accounts) else frozenset(visible)
    wanted = RecordFilter(
        logins=logins,
        cmd=data.cmd,
        open_from=data.from_,
        open_to=data.to,
        offset=data.offset,
        limit=data.limit,
    )
    records, count = await runtime.find_records(wanted)
    return {"rows": [record.to_wire() for record in records], "count": count}
