"""Trade records: GetTradeByOrder and MngGetTradesByFilter."""

from __future__ import annotations

from itertools import islice
from typing import Any

from ..protocol.errors import PermissionDenied, TradeNotFound
from ..protocol.models import OrderData, TradesFilterData
from ..runtime.records import FinanceRecord
from .context import RequestContext


def get_trade_by_order(ctx: RequestContext, data: OrderData) -> dict[str, Any]:
    runtime = ctx.services.runtime
    record = runtime.record(data.order)
    if record is None:
        raise TradeNotFound(f"order {data.order} not found")
    account = runtime.account(record.login)
    if account is None or not ctx.access.sees_account(record.login, account.group):
        raise PermissionDenied(f"order {data.order} is outside this session's accounts")
    return record.to_wire()


def get_trades_by_filter(ctx: RequestContext, data: TradesFilterData) -> dict[str, Any]:
    """Current records matching every given filter, newest first; `from`/`to` bound open_time."""
    runtime, access = ctx.services.runtime, ctx.access
    accounts = runtime.state.accounts

    def match(record: FinanceRecord) -> bool:
        if data.cmd is not None and record.cmd != data.cmd:
            return False
        if data.from_ is not None and record.open_time < data.from_:
            return False
        if data.to is not None and record.open_time > data.to:
            return False
        account = accounts.get(record.login)
        return account is not None and access.sees_account(record.login, account.group)

    matching = list(runtime.find_records(match, data.login))
    page = islice(matching, data.offset, data.offset + data.limit)
    return {"rows": [record.to_wire() for record in page], "count": len(matching)}
