"""Before the load: bind each connection to the token, choose its events, create the accounts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .client import GatewayClient
from .spec import LoadSpec

EVENT_CHANNELS = ["trade:event", "balance:event"]
_ACCOUNT = {  # AddUser fields besides the login (docs/protocol.md section 5)
    "group": "demo",
    "password": "loadgen-secret",
    "leverage": 100,
    "enable": 1,
}


class LoadError(RuntimeError):
    """The run could not start: no connection, or the server refused a set-up request (a bad
    token, an unknown group, ...)."""


async def prepare_connections(
    spec: LoadSpec, clients: list[GatewayClient], next_ext_id: Callable[[], str]
) -> None:
    """The first request of each connection carries the token (the gateway binds the connection
    to it, so load frames need not); with `events` off it also unsubscribes from the event
    channels, so the connection hears only its own answers."""
    command = "Subscribe" if spec.events else "Unsubscribe"
    await asyncio.gather(
        *(
            _expect(client, command, {"chanels": EVENT_CHANNELS}, next_ext_id(), spec, spec.token)
            for client in clients
        )
    )
    if spec.create_accounts:
        await create_accounts(spec, clients, next_ext_id)


async def create_accounts(
    spec: LoadSpec, clients: list[GatewayClient], next_ext_id: Callable[[], str]
) -> None:
    """AddUser every login (one that exists already is fine) and fund it with `initial_balance`
    (BalanceIn; also CreditIn when the mix withdraws credit), one worker per connection."""
    logins = list(spec.logins())
    fund_credit = any(command.startswith("CreditOut") for command in spec.mix)

    async def worker(client: GatewayClient, share: list[int]) -> None:
        for login in share:
            account = {
                **_ACCOUNT,
                "login": login,
                "name": f"Load {login}",
                "email": f"load{login}@example.com",
            }
            await _expect(client, "AddUser", account, next_ext_id(), spec, allow=("USER_EXISTS",))
            funds = {"login": login, "amount": spec.initial_balance, "comment": "loadgen funds"}
            await _expect(client, "BalanceIn", funds, next_ext_id(), spec)
            if fund_credit:
                await _expect(client, "CreditIn", funds, next_ext_id(), spec)

    await asyncio.gather(
        *(worker(client, logins[i :: len(clients)]) for i, client in enumerate(clients))
    )


async def _expect(
    client: GatewayClient,
    command: str,
    data: dict[str, Any],
    ext_id: str,
    spec: LoadSpec,
    token: str | None = None,
    allow: tuple[str, ...] = (),
) -> None:
    try:
        answer = await client.request(
            command, data, ext_id=ext_id, token=token, timeout=spec.timeout_s
        )
    except (TimeoutError, ConnectionError) as exc:
        raise LoadError(f"{command} got no answer: {exc!r}") from exc
    if answer.get("status") != 200 and answer.get("error") not in allow:
        hint = " (give a token: --token or GATEWAY_TOKEN)" if answer.get("status") == 401 else ""
        raise LoadError(
            f"{command} answered {answer.get('status')} {answer.get('error')}: "
            f"{answer.get('message', '')}{hint}"
        )
