"""Answers whose exact content docs/protocol.md gives, and the sessions-by-type count.

Messages are for humans and may change (docs/protocol.md, 2.3), except where the protocol quotes
them: the 403 example of section 11 and the "token expired" 401 of section 3.
"""

from __future__ import annotations

from manager_gateway.session.access import SessionType

from ..conftest import DEMO_USER, GatewayFactory, Harness
from ..fakes import FakeClock
from ..postgres import on_both_engines  # noqa: F401 (runs every test here on both engines)


async def test_permission_denied_names_the_command_and_session_type(gw: Harness) -> None:
    """A dealer's AddUser is 403 with the message the protocol's example shows."""
    dealer = await gw.client(role=SessionType.DEALER)
    answer = await dealer.request("AddUser", {**DEMO_USER, "login": 1001})
    assert answer["status"] == 403
    assert answer["error"] == "PERMISSION_DENIED"
    assert answer["message"] == "AddUser is not allowed for session type 2"


async def test_an_expired_bound_token_is_401_token_expired(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """Once the bound token has expired, a request without a fresh one says "token expired"."""
    h = await make_gateway(clock=frozen_clock)
    token = h.gateway.tokens.issue("1", SessionType.MANAGER, ["*"], int(frozen_clock.wall()) + 60)
    client = await h.client(token)
    assert (await client.ok("GetGroups", {}))["count"] == 1
    frozen_clock.advance(60)
    answer = await client.request("GetGroups", {}, token=None)
    assert (answer["status"], answer["error"]) == (401, "INVALID_TOKEN")
    assert answer["message"] == "token expired"


async def test_a_fresh_session_does_not_subscribe_to_all(gw: Harness) -> None:
    """A fresh session's subscription answers say `"all": false`, as in the protocol's example."""
    client = await gw.client()
    off = await client.ok("Unsubscribe", {"chanels": ["trade:event", "balance:event"]})
    assert off == {"chanels": [], "all": False}
    on = await client.ok("Subscribe", {"chanels": ["EURUSD", "trade:event"]})
    assert on == {"chanels": ["trade:event", "EURUSD"], "all": False}


async def test_sessions_by_type_counts_every_open_session(gw: Harness) -> None:
    """Three dealer sessions and one manager session count as three and one."""
    dealers = [await gw.client(role=SessionType.DEALER) for _ in range(3)]
    manager = await gw.client()
    for client in [*dealers, manager]:
        await client.ok("GetGroups", {})
    counts = gw.gateway.metrics.sessions_by_type
    assert (counts[SessionType.DEALER], counts[SessionType.MANAGER]) == (3, 1)
