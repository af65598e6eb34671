"""Idempotency keys past `idempotency_ttl_s` leave the ledger, not only the answers.

tests/e2e/test_idempotency.py checks how a retry is answered before and after its key expires;
this checks the housekeeping behind it: expired keys are deleted from the ledger's `idempotency`
table (and from memory) by the next commit, so keys do not pile up forever. On a FakeClock, so
key ages are exact.
"""

from __future__ import annotations

from manager_gateway.session.access import SessionType

from ..conftest import DEMO_USER, GatewayFactory, Harness
from ..fakes import FakeClock
from ..postgres import on_both_engines  # noqa: F401 (runs every test here on both engines)

TTL_S = 60
LOGIN = 1001


def stored_keys(gw: Harness) -> dict[str, float]:
    """extID -> created_at of every key in the ledger, read as another process would."""
    return dict(gw.stored("SELECT ext_id, created_at FROM idempotency"))


async def test_expired_keys_are_purged_from_the_ledger_by_the_next_commit(
    make_gateway: GatewayFactory,
) -> None:
    """Keys older than idempotency_ttl_s stay until the next commit, which deletes them from the
    ledger and from memory; younger keys stay; a purged extID sent again is a new key."""
    clock = FakeClock()
    start = clock.wall()
    gw = await make_gateway(idempotency_ttl_s=TTL_S, clock=clock)
    token = gw.gateway.tokens.issue("1", SessionType.MANAGER, ["*"], int(start) + 10**6)
    client = await gw.client(token=token)
    runtime = gw.gateway.runtime
    credit = {"login": LOGIN, "amount": 1.0, "comment": "c"}

    await client.ok("AddUser", {**DEMO_USER, "login": LOGIN}, ext_id="user")
    await client.ok("CreditIn", credit, ext_id="old")
    clock.advance(30)
    await client.ok("CreditIn", credit, ext_id="young")
    assert stored_keys(gw) == {"user": start, "old": start, "young": start + 30}

    clock.advance(TTL_S - 30 + 1)  # "user" and "old" are past the TTL, "young" is not
    await client.ok("GetAccountByLogin", {"login": LOGIN})  # a read commits nothing
    assert stored_keys(gw).keys() == {"user", "old", "young"}
    await client.ok("CreditIn", credit, ext_id="next")
    now = start + TTL_S + 1
    assert stored_keys(gw) == {"young": start + 30, "next": now}
    assert runtime.state.key_count == 2

    await client.ok("CreditIn", credit, ext_id="old")  # purged: applied again, a new key
    assert stored_keys(gw) == {"young": start + 30, "next": now, "old": now}
    clock.advance(TTL_S + 1)  # every key so far is past the TTL now
    await client.ok("CreditIn", credit, ext_id="last")
    assert stored_keys(gw) == {"last": now + TTL_S + 1}
    assert runtime.state.key_count == 1
    account = await client.ok("GetAccountByLogin", {"login": LOGIN})
    assert account["credit"] == 5.0  # old, young, next, old again, last
    assert gw.verify() == []
