"""Accounts and groups: AddUser, GetAccountByLogin, GetUserBalanceList, GetGroups."""

from __future__ import annotations

import asyncio
from typing import Any

from ..protocol.errors import PermissionDenied, UserNotFound
from ..protocol.models import AddUserData, EmptyData, LoginData, LoginsData
from ..runtime.operations import OpKind
from ..session.passwords import hash_password
from .context import RequestContext


async def add_user(ctx: RequestContext, data: AddUserData) -> dict[str, Any]:
    # Hashing is slow by design; it runs off the event loop so other sessions are not stalled.
    password_hash = await asyncio.get_running_loop().run_in_executor(
        ctx.services.password_hasher, hash_password, data.password
    )
    op = ctx.operation(OpKind.ADD_USER, data, password_hash=password_hash, answer="user")
    user: dict[str, Any] = await ctx.start(op)
    return user


def get_account_by_login(ctx: RequestContext, data: LoginData) -> dict[str, Any]:
    account = ctx.services.runtime.account(data.login)
    if account is None:
        raise UserNotFound(f"account {data.login} not found")
    if not ctx.access.sees_account(account.login, account.group):
        raise PermissionDenied(f"account {data.login} is outside this session's groups")
    return account.profile_wire()


def get_user_balance_list(ctx: RequestContext, data: LoginsData) -> dict[str, Any]:
    runtime, access = ctx.services.runtime, ctx.access
    rows = []
    for login in dict.fromkeys(data.logins):  # each login once, in the order asked
        account = runtime.account(login)
        if account is not None and access.sees_account(login, account.group):
            rows.append(account.balance_wire())
    return {"rows": rows}


def get_groups(ctx: RequestContext, data: EmptyData) -> dict[str, Any]:
    rows = [
        group.to_wire()
        for group in ctx.services.groups.values()
        if ctx.access.sees_group(group.name)
    ]
    return {"rows": rows, "count": len(rows)}
