"""Many sessions at once: connect in bounded batches, authenticate, close, and small shared tools.

A burst of thousands of simultaneous connects overruns the server's accept backlog (SYNs get
dropped and retried a second later), so connections are opened at most `parallel` at a time.
Each session's first request carries the token; the gateway binds the connection to it
(docs/protocol.md section 3), so later requests need not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .client import EventHandler, GatewayClient

EVENT_CHANNELS = ["trade:event", "balance:event"]
ACCOUNT = {"group": "demo", "password": "bench-secret", "leverage": 100, "enable": 1}
_ext_ids = itertools.count(1)
_EXT_PREFIX = f"bench-{secrets.token_hex(4)}-"  # extIDs are idempotency keys: never reuse one


class ScenarioError(RuntimeError):
    """A scenario could not set itself up (no connection, a refused set-up request)."""


def next_ext_id(tag: str = "") -> str:
    return f"{_EXT_PREFIX}{tag}{next(_ext_ids)}"


def raise_file_limit() -> tuple[int, int]:
    """Lift this process's open-file soft limit to the hard one; returns (soft, hard) after."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def open_clients(
    host: str,
    port: int,
    count: int,
    *,
    parallel: int = 200,
    on_event: EventHandler | None = None,
) -> tuple[list[GatewayClient], Counter[str]]:
    """Open up to `count` connections, `parallel` at a time; returns them and failures by kind."""
    limit = asyncio.Semaphore(parallel)
    failures: Counter[str] = Counter()

    async def one() -> GatewayClient | None:
        async with limit:
            try:
                return await GatewayClient.connect(host, port, on_event=on_event)
            except OSError as exc:
                failures[type(exc).__name__] += 1
                return None

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [client for client in opened if client is not None], failures


async def request_all(
    clients: Sequence[GatewayClient],
    command: str,
    data: dict[str, Any],
    *,
    token: str | None = None,
    parallel: int = 200,
    timeout_s: float = 30.0,
) -> Counter[str]:
    """One request on each client, `parallel` outstanding at a time; outcomes by
    "200" / "status/ERROR" / "client/TIMEOUT" / "client/CONNECTION_LOST"."""
    limit = asyncio.Semaphore(parallel)
    outcomes: Counter[str] = Counter()

    async def one(client: GatewayClient) -> None:
        async with limit:
            outcomes[await outcome(client, command, data, token=token, timeout_s=timeout_s)] += 1

    await asyncio.gather(*(one(client) for client in clients))
    return outcomes


async def outcome(
    client: GatewayClient,
    command: str,
    data: dict[str, Any],
    *,
    token: str | None = None,
    timeout_s: float = 30.0,
    ext_id: str | None = None,
) -> str:
    try:
        answer = await client.request(
            command, data, ext_id=ext_id or next_ext_id(), token=token, timeout=timeout_s
        )
    except TimeoutError:
        return "client/TIMEOUT"
    except ConnectionError:
        return "client/CONNECTION_LOST"
    return describe(answer)


def describe(answer: dict[str, Any]) -> str:
    status = answer.get("status")
    return "200" if status == 200 else f"{status}/{answer.get('error')}"


async def expect_ok(
    client: GatewayClient,
    command: str,
    data: dict[str, Any],
    *,
    token: str | None = None,
    allow: tuple[str, ...] = (),
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Request and return the answer; raise ScenarioError unless it is 200 (or an allowed error)."""
    try:
        answer = await client.request(
            command, data, ext_id=next_ext_id(), token=token, timeout=timeout_s
        )
    except (TimeoutError, ConnectionError) as exc:
        raise ScenarioError(f"{command} got no answer: {exc!r}") from exc
    if answer.get("status") != 200 and answer.get("error") not in allow:
        raise ScenarioError(f"{command} answered {describe(answer)}: {answer.get('message')}")
    return answer


async def bind_sessions(
    clients: Sequence[GatewayClient], token: str, *, events: bool, parallel: int = 200
) -> None:
    """Bind each connection to `token` with its first request, turning the event channels on
    (`events`) or off; raise ScenarioError if any of them is refused."""
    command = "Subscribe" if events else "Unsubscribe"
    outcomes = await request_all(
        clients, command, {"chanels": EVENT_CHANNELS}, token=token, parallel=parallel
    )
    refused = {kind: n for kind, n in outcomes.items() if kind != "200"}
    if refused:
        raise ScenarioError(f"{command} refused: {refused}")


async def create_accounts(client: GatewayClient, logins: Sequence[int], tag: str) -> None:
    """AddUser each login (one that exists already is fine), pipelined on one connection."""
    futures = [
        client.send(
            "AddUser",
            {
                **ACCOUNT,
                "login": login,
                "name": f"{tag} {login}",
                "email": f"{tag}{login}@example.com",
            },
            ext_id=next_ext_id(),
        )
        for login in logins
    ]
    for answer in await asyncio.gather(*futures):
        if answer.get("status") != 200 and answer.get("error") != "USER_EXISTS":
            raise ScenarioError(f"AddUser answered {describe(answer)}: {answer.get('message')}")


async def close_clients(clients: Sequence[GatewayClient]) -> None:
    for client in clients:
        client.close()
    for client in clients:
        await client.wait_closed()


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0..100) of an ascending sequence; None when empty."""
    if not ordered:
        return None
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def mb(value_bytes: int | None) -> float | None:
    return None if value_bytes is None else round(value_bytes / 2**20, 1)
