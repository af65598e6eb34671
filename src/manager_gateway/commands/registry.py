"""The command table: name -> data model, handler, session types allowed.

The dispatcher looks a command up here, checks the role once, validates `data` against the model
and calls the handler. Adding a command is adding a row.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol.models import (
    AddUserData,
    BalanceInData,
    BalanceOutData,
    ChannelsData,
    CommandData,
    CreditInData,
    CreditOutData,
    EmptyData,
    LoginData,
    LoginsData,
    OrderData,
    TradesFilterData,
)
from ..runtime.records import Cmd
from ..session.access import SessionType
from ..session.permissions import ACCOUNT_CREATORS, EVERYONE, STAFF
from . import accounts, finance, subscriptions, trades

Handler = Callable[[Any, Any], Any]  # returns the answer's data, or an awaitable of it


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command's row. Handlers come in three shapes: a plain function answers at once (reads,
    subscriptions); a `deferred` one returns the future of its answer (finance: the main loop or
    the Sync waiter settles it, and no task is made per request, which costs more than the rest
    of the dispatch); a coroutine function runs as a task (AddUser, which must hash first)."""

    model: type[CommandData]
    handler: Handler
    roles: frozenset[SessionType]
    changes_state: bool = False
    deferred: bool = False
    #: Answers from account state, so it waits for its connection's earlier writes to be
    #: decided (read-your-writes); subscriptions do not.
    reads_state: bool = False
    #: Derived once here, not per request.
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))


def _finance_rows() -> dict[str, CommandSpec]:
    rows = {}
    for name, model, cmd in (
        ("BalanceIn", BalanceInData, Cmd.BALANCE_IN),
        ("BalanceOut", BalanceOutData, Cmd.BALANCE_OUT),
        ("CreditIn", CreditInData, Cmd.CREDIT_IN),
        ("CreditOut", CreditOutData, Cmd.CREDIT_OUT),
    ):
        rows[name] = CommandSpec(model, finance.finance(cmd, sync=False), STAFF, True, True)
        rows[name + "Sync"] = CommandSpec(model, finance.finance(cmd, sync=True), STAFF, True, True)
    for name, credit in (("DeleteBalance", False), ("DeleteCredit", True)):
        rows[name] = CommandSpec(OrderData, finance.delete(credit, sync=False), STAFF, True, True)
        rows[name + "Sync"] = CommandSpec(
            OrderData, finance.delete(credit, sync=True), STAFF, True, True
        )
    return rows


COMMANDS: dict[str, CommandSpec] = {
    **_finance_rows(),
    "AddUser": CommandSpec(AddUserData, accounts.add_user, ACCOUNT_CREATORS, True),
    "GetAccountByLogin": CommandSpec(
        LoginData, accounts.get_account_by_login, STAFF, reads_state=True
    ),
    "GetUserBalanceList": CommandSpec(
        LoginsData, accounts.get_user_balance_list, STAFF, reads_state=True
    ),
    "GetGroups": CommandSpec(EmptyData, accounts.get_groups, STAFF, reads_state=True),
    "MngGetTradesByFilter": CommandSpec(
        TradesFilterData, trades.get_trades_by_filter, STAFF, reads_state=True
    ),
    "GetTradeByOrder": CommandSpec(
        OrderData, trades.get_trade_by_order, EVERYONE, reads_state=True
    ),
    "Subscribe": CommandSpec(ChannelsData, subscriptions.subscribe, EVERYONE),
    "Unsubscribe": CommandSpec(ChannelsData, subscriptions.unsubscribe, EVERYONE),
    "SubscribeAll": CommandSpec(EmptyData, subscriptions.subscribe_all, EVERYONE),
    "UnsubscribeAll": CommandSpec(EmptyData, subscriptions.unsubscribe_all, EVERYONE),
}

#: Answered without a token: load balancers and probes use it. A valid token sent with it
#: binds the connection (a listener may send nothing else); an invalid one is ignored.
HEALTH_CHECK = "HealthCheck"
ALL_COMMANDS = frozenset({*COMMANDS, HEALTH_CHECK})
