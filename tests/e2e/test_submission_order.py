"""Per-connection submission order and per-session Sync waiters, over real TCP.

A state-changing request submits to the main loop only after the one received before it on its
connection; a connection that closes takes only its own Sync waiters with it.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..conftest import DEMO_USER, GatewayFactory, Harness, ledger, wait_until
from ..postgres import SQLITE_ONLY, on_both_engines  # noqa: F401 (runs every test here on both engines)
from .test_read_your_writes import LOGIN, answers, pipeline, world

# The finance writes that apply to a fresh account: (command, data, (balance, credit) after).
FIRST_WRITES: list[tuple[str, dict[str, Any], tuple[float, float]]] = [
    ("BalanceIn", {"login": LOGIN, "amount": 7}, (7.0, 0.0)),
    ("BalanceInSync", {"login": LOGIN, "amount": 7}, (7.0, 0.0)),
    ("CreditIn", {"login": LOGIN, "amount": 7, "comment": "c"}, (0.0, 7.0)),
    ("CreditInSync", {"login": LOGIN, "amount": 7, "comment": "c"}, (0.0, 7.0)),
]


@pytest.mark.parametrize(
    ("command", "data", "money"), FIRST_WRITES, ids=[write[0] for write in FIRST_WRITES]
)
async def test_a_write_never_overtakes_an_adduser_before_it(
    gw: Harness, command: str, data: dict[str, Any], money: tuple[float, float]
) -> None:
    """AddUser (slow: it hashes a password) then a write to that login, pipelined: it applies."""
    client = await gw.client()
    add_user = ("AddUser", {**DEMO_USER, "login": LOGIN})
    add, write = await answers(pipeline(client, add_user, (command, data)))
    assert add["status"] == 200, add
    assert write["status"] == 200, write
    assert write["data"]["order"] == 1
    account = await client.ok("GetAccountByLogin", {"login": LOGIN})
    assert (account["balance"], account["credit"]) == money


@SQLITE_ONLY
async def test_closing_a_connection_leaves_other_sessions_sync_requests(
    make_gateway: GatewayFactory,
) -> None:
    """Two connections with Sync requests held in a commit: closing one drops only its waiters,
    and the other's are answered 200 once the commit is released."""
    h = await make_gateway(gated=True)
    survivor, _ = await world(h)
    leaving = await h.client()
    ledger(h).hold()
    kept = pipeline(
        survivor,
        ("BalanceInSync", {"login": LOGIN, "amount": 1}),
        ("CreditInSync", {"login": LOGIN, "amount": 2, "comment": "c"}),
    )
    pipeline(
        leaving,
        ("BalanceInSync", {"login": LOGIN, "amount": 4}),
        ("CreditInSync", {"login": LOGIN, "amount": 8, "comment": "c"}),
    )
    waiters = h.gateway.waiters
    await wait_until(survivor, lambda: waiters.pending_count() == 4)
    await leaving.close()
    h.clients.remove(leaving)
    # The closed connection's two waiters go with it; the survivor's two stay.
    await wait_until(survivor, lambda: waiters.pending_count() == 2)
    assert not any(future.done() for future in kept)
    ledger(h).release()
    balance, credit = await answers(kept)
    assert (balance["status"], credit["status"]) == (200, 200), (balance, credit)
    assert (balance["data"]["profit"], credit["data"]["profit"]) == (1.0, 2.0)
    account = await survivor.ok("GetAccountByLogin", {"login": LOGIN})
    assert (account["balance"], account["credit"]) == (105.0, 60.0)  # the closed one's applied too
    assert waiters.pending_count() == 0
