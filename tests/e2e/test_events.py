"""Pushed events over real TCP (docs/protocol.md section 6): what follows a change, who hears it.

A session that must hear nothing is probed without sleeping: once the allowed sessions have the
event, a HealthCheck sent on the excluded session is answered after anything already queued for
it (the gateway writes in order per connection), so an empty event queue then proves silence.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from manager_gateway.session.access import SessionType

from ..conftest import Client, GatewayFactory, Harness, money
from ..fakes import FakeClock

USER, MANAGER, DEALER, ADMIN = (
    SessionType.USER,
    SessionType.MANAGER,
    SessionType.DEALER,
    SessionType.ADMIN,
)
EVENT_CHANNELS = ["trade:event", "balance:event"]
TWO_GROUPS = [
    {"name": "demo", "currency": "USD", "digits": 2},
    {"name": "vip-eur", "currency": "EUR", "digits": 2},
]


@pytest.fixture
async def h(make_gateway: GatewayFactory, frozen_clock: FakeClock) -> Harness:
    """Groups demo and vip-eur, accounts 1001 and 1002 (demo) and 2001 (vip-eur)."""
    harness = await make_gateway(clock=frozen_clock, groups=TWO_GROUPS)
    admin = await bound_client(harness, role=ADMIN, login="setup")
    await asyncio.gather(
        *(
            harness.add_user(admin, login, group=group)
            for login, group in ((1001, "demo"), (1002, "demo"), (2001, "vip-eur"))
        )
    )
    await admin.close()
    harness.clients.remove(admin)
    return harness


async def bound_client(h: Harness, token: str | None = None, **token_kw: Any) -> Client:
    """A client bound to its token (one request made)."""
    client = await h.client(token, **token_kw)
    answer = await client.request("Subscribe", {"chanels": []})
    assert answer["status"] in (200, 403), answer
    return client


async def change_events(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next two events, asserted to be a trade:event followed by a balance:event."""
    trade, balance = await client.next_event(), await client.next_event()
    assert trade["event"] == "trade:event" and balance["event"] == "balance:event", (trade, balance)
    assert "extID" not in trade and "extID" not in balance
    assert set(trade) == {"event", "type", "data"} and set(balance) == {"event", "type", "data"}
    assert balance["type"] == 1
    return trade, balance


async def assert_silent(*clients: Client) -> None:
    """Each client has received no event: its HealthCheck answer came with nothing before it."""
    for client in clients:
        assert (await client.ok("HealthCheck"))["status"] == "ok"
        assert client.drain_events() == []


async def test_every_change_pushes_trade_then_balance(h: Harness) -> None:
    """Add, update and delete each push trade:event (type 0, 1, 2) then balance:event."""
    client = await bound_client(h)
    added = await client.ok("BalanceInSync", {"login": 1001, "amount": 100})
    trade, balance = await change_events(client)
    assert trade == {"event": "trade:event", "type": 0, "data": added}
    assert balance == {"event": "balance:event", "type": 1, "data": money(1001, 100.0, 0.0)}

    ack = await client.ok("CreditIn", {"login": 1001, "amount": 50, "comment": "c"})
    trade, balance = await change_events(client)
    assert trade["type"] == 0
    assert trade["data"] == await client.ok("GetTradeByOrder", {"order": ack["order"]})
    assert balance["data"] == money(1001, 100.0, 50.0)

    updated = await client.ok(
        "BalanceInSync", {"login": 1001, "amount": 80, "comment": "fix", "order": added["order"]}
    )
    trade, balance = await change_events(client)
    assert trade == {"event": "trade:event", "type": 1, "data": updated}
    assert balance["data"] == money(1001, 80.0, 50.0)

    await client.ok("BalanceIn", {"login": 1001, "amount": 100})
    trade, balance = await change_events(client)
    assert trade["type"] == 0 and balance["data"] == money(1001, 180.0, 50.0)

    await client.ok("BalanceOut", {"login": 1001, "amount": -30, "order": added["order"]})
    trade, balance = await change_events(client)
    assert (trade["type"], trade["data"]["cmd"], trade["data"]["profit"]) == (1, 8, -30.0)
    assert balance["data"] == money(1001, 70.0, 50.0)

    deleted = await client.ok("DeleteCreditSync", {"order": ack["order"]})
    trade, balance = await change_events(client)
    assert trade == {"event": "trade:event", "type": 2, "data": deleted}
    assert deleted["state"] == 6
    assert balance["data"] == money(1001, 70.0, 0.0)

    await client.ok("DeleteBalance", {"order": added["order"]})
    trade, balance = await change_events(client)
    assert (trade["type"], trade["data"]["state"]) == (2, 6)
    assert balance["data"] == money(1001, 100.0, 0.0)
    await assert_silent(client)
    assert h.gateway.waiters.pending_count() == 0


async def test_listener_bound_by_health_check_hears_events(h: Harness) -> None:
    """A client whose only request is a HealthCheck with a valid token is bound by it: it hears
    trade:event and balance:event of the accounts its masks cover, and nothing else."""
    listener = await h.client(role=DEALER, groups=["demo"])
    assert (await listener.ok("HealthCheck"))["status"] == "ok"
    writer = await bound_client(h, role=ADMIN)
    added = await writer.ok("BalanceInSync", {"login": 1001, "amount": 25})
    trade, balance = await change_events(listener)
    assert trade == {"event": "trade:event", "type": 0, "data": added}
    assert balance == {"event": "balance:event", "type": 1, "data": money(1001, 25.0, 0.0)}
    await writer.ok("BalanceInSync", {"login": 2001, "amount": 5})  # vip-eur: not its group
    await writer.ok("CreditInSync", {"login": 1002, "amount": 7, "comment": "c"})
    trade, balance = await change_events(listener)
    assert (trade["data"]["login"], balance["data"]) == (1002, money(1002, 0.0, 7.0))
    await assert_silent(listener)


async def test_invalid_token_on_health_check_binds_nothing(h: Harness) -> None:
    """A HealthCheck with an invalid token is answered 200 but binds nothing: no events, and
    the next request without a token is 401."""
    listener = await Client.connect(h.port, "not-a-token")
    h.clients.append(listener)
    assert (await listener.ok("HealthCheck"))["status"] == "ok"
    writer = await bound_client(h, role=ADMIN)
    await writer.ok("BalanceInSync", {"login": 1001, "amount": 25})
    await change_events(writer)
    answer = await listener.request("GetGroups", token=None)
    assert (answer["status"], answer["error"]) == (401, "INVALID_TOKEN")
    assert listener.drain_events() == []


async def test_refused_operations_push_nothing(h: Harness) -> None:
    """A refused operation (NOT_ENOUGH_MONEY, INVALID_DATA, unknown login) pushes no event."""
    client = await bound_client(h)
    watcher = await bound_client(h, role=ADMIN)
    for command, data in (
        ("BalanceOutSync", {"login": 1001, "amount": -1}),
        ("CreditOut", {"login": 1001, "amount": -1, "comment": "c"}),
        ("BalanceIn", {"login": 1001, "amount": 1.005}),
        ("BalanceInSync", {"login": 4242, "amount": 1}),
        ("DeleteBalanceSync", {"order": 777}),
    ):
        answer = await client.request(command, data)
        assert answer["status"] in (400, 404), answer
    await assert_silent(client, watcher)
    assert h.gateway.waiters.pending_count() == 0


async def test_events_reach_exactly_the_sessions_allowed_to_see_them(
    h: Harness, frozen_clock: FakeClock
) -> None:
    """Requester, admin, matching masks and the account's own USER hear it; no one else does."""
    requester = await bound_client(h)
    allowed = [
        requester,
        await bound_client(h, role=ADMIN, groups=["vip*"]),
        await bound_client(h, role=MANAGER, groups=["demo"]),
        await bound_client(h, role=DEALER, groups=["de*", "nothing"]),
        await bound_client(h, role=USER, login=1001),
    ]
    unsubscribed = await bound_client(h)
    await unsubscribed.ok("Unsubscribe", {"chanels": EVENT_CHANNELS})
    expiring = await bound_client(
        h, h.gateway.tokens.issue("9", MANAGER, ["*"], int(frozen_clock.wall()) + 30)
    )
    excluded = [
        await bound_client(h, role=MANAGER, groups=["vip*"]),
        await bound_client(h, role=DEALER, groups=["vip-eur"]),
        await bound_client(h, role=USER, login=1002),
        await bound_client(h, role=USER, login="1001x"),
        unsubscribed,
        expiring,
    ]
    frozen_clock.advance(31)  # only `expiring` holds a token this old

    record = await requester.ok("CreditInSync", {"login": 1001, "amount": 25, "comment": "promo"})
    for client in allowed:
        trade, balance = await change_events(client)
        assert trade == {"event": "trade:event", "type": 0, "data": record}
        assert balance == {"event": "balance:event", "type": 1, "data": money(1001, 0.0, 25.0)}
    await assert_silent(*allowed, *excluded)

    await unsubscribed.ok("Subscribe", {"chanels": EVENT_CHANNELS})
    fresh = h.gateway.tokens.issue("9", MANAGER, ["*"], int(frozen_clock.wall()) + 30)
    await expiring.ok("GetGroups", {}, token=fresh)
    ack = await requester.ok("CreditOut", {"login": 1001, "amount": -5, "comment": "back"})
    for client in [*allowed, unsubscribed, expiring]:
        trade, balance = await change_events(client)
        assert (trade["type"], trade["data"]["order"]) == (0, ack["order"])
        assert balance["data"] == money(1001, 0.0, 20.0)
    await assert_silent(*allowed, *excluded)
    assert h.gateway.waiters.pending_count() == 0


async def test_events_of_a_vip_account_follow_the_masks(h: Harness) -> None:
    """A change on a vip-eur account reaches vip masks and admins, not demo-only sessions."""
    demo_manager = await bound_client(h, role=MANAGER, groups=["demo"])
    vip_dealer = await bound_client(h, role=DEALER, groups=["vip*"])
    admin = await bound_client(h, role=ADMIN)
    await vip_dealer.ok("BalanceInSync", {"login": 2001, "amount": 12.5})
    for client in (vip_dealer, admin):
        trade, balance = await change_events(client)
        assert (trade["type"], trade["data"]["login"]) == (0, 2001)
        assert balance["data"] == money(2001, 12.5, 0.0)
    await assert_silent(demo_manager, vip_dealer, admin)
    assert h.gateway.waiters.pending_count() == 0


async def test_requester_that_unsubscribed_gets_only_its_answer(h: Harness) -> None:
    """A session that turned both event channels off gets its Sync answer and no events."""
    cashier = await bound_client(h)
    await cashier.ok("Unsubscribe", {"chanels": EVENT_CHANNELS})
    watcher = await bound_client(h)
    record = await cashier.ok("BalanceInSync", {"login": 1001, "amount": 3})
    trade, _ = await change_events(watcher)
    assert trade["data"] == record
    await assert_silent(cashier)
    assert h.gateway.waiters.pending_count() == 0


async def test_channels_are_independent(h: Harness) -> None:
    """Unsubscribing trade:event alone still delivers balance:event, and the other way round."""
    balance_only = await bound_client(h)
    await balance_only.ok("Unsubscribe", {"chanels": ["trade:event"]})
    trade_only = await bound_client(h)
    await trade_only.ok("Unsubscribe", {"chanels": ["balance:event"]})
    both = await bound_client(h)
    await both.ok("BalanceIn", {"login": 1001, "amount": 4})
    await change_events(both)
    balance = await balance_only.next_event()
    assert balance == {"event": "balance:event", "type": 1, "data": money(1001, 4.0, 0.0)}
    trade = await trade_only.next_event()
    assert (trade["event"], trade["type"]) == ("trade:event", 0)
    await assert_silent(balance_only, trade_only, both)


async def test_unsubscribe_all_leaves_event_channels_on(h: Harness) -> None:
    """UnsubscribeAll clears symbol channels only: events keep coming."""
    client = await bound_client(h)
    await client.ok("Subscribe", {"chanels": ["EURUSD"]})
    await client.ok("SubscribeAll", {})
    await client.ok("UnsubscribeAll", {})
    other = await bound_client(h)
    await other.ok("BalanceIn", {"login": 1002, "amount": 9})
    trade, balance = await change_events(client)
    assert (trade["type"], trade["data"]["login"]) == (0, 1002)
    assert balance["data"] == money(1002, 9.0, 0.0)


async def test_changes_by_one_session_reach_the_others(h: Harness) -> None:
    """Events are pushed to every allowed session, not only to the one that made the change."""
    clients = [await bound_client(h) for _ in range(5)]
    for index, client in enumerate(clients):
        await client.ok("BalanceIn", {"login": 1001, "amount": index + 1})
    for client in clients:
        balances = []
        for _ in clients:
            _, balance = await change_events(client)
            balances.append(balance["data"]["balance"])
        assert balances == [1.0, 3.0, 6.0, 10.0, 15.0]
    await assert_silent(*clients)


@pytest.mark.parametrize("kind", [SessionType.SYSTEM, SessionType.FIX], ids=lambda kind: kind.name)
async def test_refused_session_types_hear_no_events(h: Harness, kind: SessionType) -> None:
    """A SYSTEM or FIX token is refused on this API (403), so its session hears no events."""
    refused = await bound_client(h, role=kind)
    assert (await refused.request("GetGroups"))["status"] == 403
    requester = await bound_client(h)
    await requester.ok("BalanceIn", {"login": 1001, "amount": 1})
    await change_events(requester)
    await assert_silent(refused)
