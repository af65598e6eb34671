"""Tokens, session types and group masks over real TCP (docs/protocol.md section 3)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from manager_gateway.commands.registry import ALL_COMMANDS
from manager_gateway.session.access import SessionType

from ..conftest import DEMO_USER, Client, GatewayFactory, Harness
from ..fakes import FakeClock
from ..postgres import on_both_engines  # noqa: F401 (runs every test here on both engines)
from ..protocol_tables import PROTOCOL_ROLES

USER, MANAGER, DEALER, ADMIN = (
    SessionType.USER,
    SessionType.MANAGER,
    SessionType.DEALER,
    SessionType.ADMIN,
)
SECRET = "test-secret-" + "x" * 40
TWO_GROUPS = [
    {"name": "demo", "currency": "USD", "digits": 2},
    {"name": "vip-eur", "currency": "EUR", "digits": 2},
]


async def bare(h: Harness, token: str | None = None) -> Client:
    """A client that sends no token unless told to."""
    client = await Client.connect(h.port, token)
    h.clients.append(client)
    return client


async def status(client: Client, command: str, data: dict[str, Any], **kw: Any) -> tuple[int, str]:
    answer = await client.request(command, data, **kw)
    return answer["status"], answer.get("error", "")


def claims_token(**claims: Any) -> str:
    """A token signed with the test gateway's secret carrying exactly `claims`."""
    return jwt.encode(claims, SECRET, algorithm="HS256")


# -- tokens ------------------------------------------------------------------------------------


async def test_no_token_is_401(make_gateway: GatewayFactory) -> None:
    """Every command but HealthCheck needs a token: 401 INVALID_TOKEN without one."""
    gw = await make_gateway(max_auth_failures=100)  # a missing token counts as a failure too
    client = await bare(gw)
    for command in sorted(ALL_COMMANDS - {"HealthCheck"}):
        assert await status(client, command, {}) == (401, "INVALID_TOKEN"), command
    assert (await client.ok("HealthCheck"))["status"] == "ok"


async def test_token_binds_to_the_connection(gw: Harness) -> None:
    """After one valid token, later requests on the connection may omit `__token`."""
    client = await bare(gw)
    assert await status(client, "GetGroups", {}) == (401, "INVALID_TOKEN")
    await client.ok("GetGroups", {}, token=gw.token())
    assert (await client.ok("GetGroups", {}))["count"] == 1
    other = await bare(gw)
    assert await status(other, "GetGroups", {}) == (401, "INVALID_TOKEN")


async def test_invalid_presented_token_is_401_on_a_bound_connection(
    make_gateway: GatewayFactory,
) -> None:
    """A bad `__token` is refused even when a valid token is bound; the bound one stays."""
    h = await make_gateway(jwt_secret=SECRET)
    client = await bare(h)
    await client.ok("GetGroups", {}, token=h.token())
    exp = int(time.time()) + 3600
    bad_tokens: list[object] = [
        "",
        "garbage",
        123,
        ["x"],
        {"a": 1},
        True,
        jwt.encode(
            {"sub": "1", "type": 1, "exp": exp}, "another-secret-" + "y" * 40, algorithm="HS256"
        ),
        claims_token(type=1, exp=exp),  # no sub
        claims_token(sub="1", exp=exp),  # no type
        claims_token(sub="1", type=9, exp=exp),  # unknown type
        claims_token(sub="1", type=-1, exp=exp),
        claims_token(sub="1", type="1", exp=exp),
        claims_token(sub="1", type=1),  # no exp
        claims_token(sub="1", type=1, exp=int(time.time()) - 5),
        claims_token(sub="1", type=1, exp=exp, groups="*"),  # groups not a list
        h.token()[:-3] + "abc",  # bad signature
    ]
    for bad in bad_tokens:
        assert await status(client, "GetGroups", {}, token=bad) == (401, "INVALID_TOKEN"), bad
        assert (await client.ok("GetGroups", {}))["count"] == 1  # resets the failure count
    good = claims_token(sub="7", type=1, exp=exp)
    assert (await client.ok("GetGroups", {}, token=good))["count"] == 1


async def test_expired_token_is_401(gw: Harness) -> None:
    """A token past its `exp` is 401 INVALID_TOKEN and binds nothing."""
    client = await bare(gw)
    expired = gw.gateway.tokens.issue("1", MANAGER, ["*"], int(time.time()) - 10)
    assert await status(client, "GetGroups", {}, token=expired) == (401, "INVALID_TOKEN")
    assert await status(client, "GetGroups", {}) == (401, "INVALID_TOKEN")
    expired_one = gw.token(ttl_s=-1)
    assert await status(client, "GetGroups", {}, token=expired_one) == (401, "INVALID_TOKEN")


async def test_bound_token_expiry_is_checked_on_every_use(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """Once the bound token expires, requests without a fresh token get 401."""
    h = await make_gateway(clock=frozen_clock)
    token = h.gateway.tokens.issue("1", MANAGER, ["*"], int(frozen_clock.wall()) + 60)
    client = await bare(h)
    assert (await client.ok("GetGroups", {}, token=token))["count"] == 1
    frozen_clock.advance(59)
    assert (await client.ok("GetGroups", {}))["count"] == 1
    frozen_clock.advance(1)
    assert await status(client, "GetGroups", {}) == (401, "INVALID_TOKEN")
    assert await status(client, "GetGroups", {}, token=token) == (401, "INVALID_TOKEN")
    fresh = h.gateway.tokens.issue("1", MANAGER, ["*"], int(frozen_clock.wall()) + 60)
    assert (await client.ok("GetGroups", {}, token=fresh))["count"] == 1
    assert (await client.ok("GetGroups", {}))["count"] == 1


async def test_consecutive_auth_failures_close_the_connection(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """`max_auth_failures` consecutive invalid tokens close the connection; a valid one resets.
    Sessions already open from the same address keep working; new connections from it are
    refused for `auth_penalty_s`, then accepted again."""
    h = await make_gateway(max_auth_failures=3, clock=frozen_clock, auth_penalty_s=2.0)
    bystander = await h.client()
    client = await bare(h)
    for _ in range(2):
        assert await status(client, "GetGroups", {}, token="bad") == (401, "INVALID_TOKEN")
    await client.ok("GetGroups", {}, token=h.token())
    for _ in range(2):
        assert await status(client, "GetGroups", {}, token="bad") == (401, "INVALID_TOKEN")
    assert (await client.ok("HealthCheck"))["status"] == "ok"
    assert not client.closed.is_set()
    assert await status(client, "GetGroups", {}, token="bad") == (401, "INVALID_TOKEN")
    await asyncio.wait_for(client.closed.wait(), 5)
    assert (await bystander.ok("GetGroups"))["count"] == 1
    refused = await bare(h)
    await asyncio.wait_for(refused.closed.wait(), 5)  # closed at once: the address is penalised
    frozen_clock.advance(2.0)
    other = await h.client()
    assert (await other.ok("GetGroups"))["count"] == 1


@pytest.mark.parametrize("kind", [SessionType.SYSTEM, SessionType.FIX], ids=lambda kind: kind.name)
async def test_system_and_fix_tokens_are_refused(gw: Harness, kind: SessionType) -> None:
    """Session types 4 and 5 get 403 PERMISSION_DENIED on every command but HealthCheck."""
    admin = await gw.client(role=ADMIN)
    await gw.add_user(admin, 1001)
    client = await gw.client(role=kind, login=1001)
    data = valid_data(1001, {name: 1 for name in ("b1", "b2", "c1", "c2", "keep")})
    for command in sorted(ALL_COMMANDS - {"HealthCheck"}):
        assert await status(client, command, data[command]) == (403, "PERMISSION_DENIED"), command
    assert (await client.ok("HealthCheck"))["status"] == "ok"
    assert gw.gateway.waiters.pending_count() == 0


async def test_client_supplied_access_is_ignored(make_gateway: GatewayFactory) -> None:
    """An `__access` object inside `data` grants nothing: the token alone decides."""
    h = await make_gateway(groups=TWO_GROUPS)
    admin = await h.client(role=ADMIN)
    await h.add_user(admin, 1001)
    forged = {"__access": {"login": "root", "type": 3, "groups": ["*"]}}
    user = await h.client(role=USER, login=1001)
    assert await status(user, "BalanceIn", {"login": 1001, "amount": 5, **forged}) == (
        403,
        "PERMISSION_DENIED",
    )
    assert await status(user, "GetAccountByLogin", {"login": 1001, **forged}) == (
        403,
        "PERMISSION_DENIED",
    )
    masked = await h.client(role=MANAGER, groups=["vip*"])
    assert await status(masked, "GetAccountByLogin", {"login": 1001, **forged}) == (
        403,
        "PERMISSION_DENIED",
    )
    assert await status(masked, "BalanceInSync", {"login": 1001, "amount": 5, **forged}) == (
        403,
        "PERMISSION_DENIED",
    )
    groups = await masked.ok("GetGroups", forged)
    assert [row["group"] for row in groups["rows"]] == ["vip-eur"]
    account = await admin.ok("GetAccountByLogin", {"login": 1001})
    assert (account["balance"], account["credit"]) == (0.0, 0.0)
    assert h.gateway.waiters.pending_count() == 0


# -- the permission table ----------------------------------------------------------------------


def valid_data(login: int, orders: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Valid `data` for every command against account `login` and prepared records."""
    return {
        "BalanceIn": {"login": login, "amount": 1},
        "BalanceInSync": {"login": login, "amount": 1},
        "BalanceOut": {"login": login, "amount": -1},
        "BalanceOutSync": {"login": login, "amount": -1},
        "CreditIn": {"login": login, "amount": 1, "comment": "c"},
        "CreditInSync": {"login": login, "amount": 1, "comment": "c"},
        "CreditOut": {"login": login, "amount": -1, "comment": "c"},
        "CreditOutSync": {"login": login, "amount": -1, "comment": "c"},
        "DeleteBalance": {"order": orders["b1"]},
        "DeleteBalanceSync": {"order": orders["b2"]},
        "DeleteCredit": {"order": orders["c1"]},
        "DeleteCreditSync": {"order": orders["c2"]},
        "AddUser": dict(DEMO_USER),
        "GetAccountByLogin": {"login": login},
        "GetUserBalanceList": {"logins": [login]},
        "MngGetTradesByFilter": {"login": login},
        "GetGroups": {},
        "GetTradeByOrder": {"order": orders["keep"]},
        "Subscribe": {"chanels": ["EURUSD"]},
        "Unsubscribe": {"chanels": ["EURUSD"]},
        "SubscribeAll": {},
        "UnsubscribeAll": {},
        "HealthCheck": {},
    }


def test_permission_table_names_every_command() -> None:
    """The table below covers exactly the commands the gateway serves."""
    assert set(PROTOCOL_ROLES) == set(ALL_COMMANDS)


@pytest.mark.parametrize("role", [USER, MANAGER, DEALER, ADMIN], ids=lambda role: role.name)
async def test_permission_table(gw: Harness, role: SessionType) -> None:
    """Each command is 403 exactly where section 3 has "-" for the session type, else 200."""
    admin = await gw.client(role=ADMIN, login="admin")
    await gw.add_user(admin, 1001)
    await admin.ok("BalanceInSync", {"login": 1001, "amount": 1000})
    await admin.ok("CreditInSync", {"login": 1001, "amount": 1000, "comment": "seed"})
    orders = {}
    for name in ("b1", "b2", "keep"):
        orders[name] = (await admin.ok("BalanceIn", {"login": 1001, "amount": 1}))["order"]
    for name in ("c1", "c2"):
        ack = await admin.ok("CreditIn", {"login": 1001, "amount": 1, "comment": "c"})
        orders[name] = ack["order"]
    before = await admin.ok("GetAccountByLogin", {"login": 1001})
    client = await gw.client(role=role, login=1001)
    data = valid_data(1001, orders)
    for command, allowed in PROTOCOL_ROLES.items():
        answer = await client.request(command, data[command])
        if role in allowed:
            assert answer["status"] == 200, (command, answer)
        else:
            assert (answer["status"], answer["error"]) == (403, "PERMISSION_DENIED"), command
    after = await admin.ok("GetAccountByLogin", {"login": 1001})
    if role is USER:
        assert after == before
    else:
        assert (after["balance"], after["credit"]) == (before["balance"] - 2, before["credit"] - 2)
    assert gw.gateway.waiters.pending_count() == 0


async def test_user_reads_only_its_own_trades(gw: Harness) -> None:
    """A USER session (sub = its login) may GetTradeByOrder only records of its own login."""
    admin = await gw.client(role=ADMIN)
    await gw.add_user(admin, 1001)
    await gw.add_user(admin, 1002)
    own = await admin.ok("BalanceIn", {"login": 1001, "amount": 5})
    foreign = await admin.ok("BalanceIn", {"login": 1002, "amount": 5})
    user = await gw.client(role=USER, login=1001)
    assert (await user.ok("GetTradeByOrder", {"order": own["order"]}))["login"] == 1001
    assert await status(user, "GetTradeByOrder", {"order": foreign["order"]}) == (
        403,
        "PERMISSION_DENIED",
    )
    assert await status(user, "GetAccountByLogin", {"login": 1001}) == (403, "PERMISSION_DENIED")
    other = await gw.client(role=USER, login=1002)
    assert await status(other, "GetTradeByOrder", {"order": own["order"]}) == (
        403,
        "PERMISSION_DENIED",
    )
    named = await gw.client(role=USER, login="alice")
    assert await status(named, "GetTradeByOrder", {"order": own["order"]}) == (
        403,
        "PERMISSION_DENIED",
    )


# -- group masks -------------------------------------------------------------------------------


async def two_group_world(h: Harness) -> tuple[Client, dict[str, int]]:
    """Accounts 1001 (demo) and 2001 (vip-eur) with one balance record each."""
    admin = await h.client(role=ADMIN, login="admin")
    await h.add_user(admin, 1001)
    await h.add_user(admin, 2001, group="vip-eur")
    orders = {}
    for login in (1001, 2001):
        await admin.ok("BalanceInSync", {"login": login, "amount": 100})
        await admin.ok("CreditInSync", {"login": login, "amount": 100, "comment": "seed"})
        orders[f"b{login}"] = (await admin.ok("BalanceIn", {"login": login, "amount": 1}))["order"]
        ack = await admin.ok("CreditIn", {"login": login, "amount": 1, "comment": "c"})
        orders[f"c{login}"] = ack["order"]
    return admin, orders


@pytest.mark.parametrize("role", [MANAGER, DEALER], ids=lambda role: role.name)
async def test_group_masks_limit_manager_and_dealer(
    make_gateway: GatewayFactory, role: SessionType
) -> None:
    """A session with masks ["vip*"] gets 403 on demo accounts and sees only vip rows."""
    h = await make_gateway(groups=TWO_GROUPS)
    admin, orders = await two_group_world(h)
    before = await admin.ok("GetAccountByLogin", {"login": 1001})
    masked = await h.client(role=role, groups=["vip*"])
    for command in ("BalanceIn", "CreditIn", "BalanceOut", "CreditOut"):
        for suffix in ("", "Sync"):
            amount = -1 if "Out" in command else 1
            for login, expected in ((1001, 403), (2001, 200)):
                data = {"login": login, "amount": amount, "comment": "c"}
                assert (await status(masked, command + suffix, data))[0] == expected, (
                    command + suffix,
                    login,
                )
    for command, order in (
        ("DeleteBalance", "b1001"),
        ("DeleteCreditSync", "c1001"),
        ("GetTradeByOrder", "b1001"),
    ):
        assert await status(masked, command, {"order": orders[order]}) == (
            403,
            "PERMISSION_DENIED",
        ), command
    assert await status(masked, "GetAccountByLogin", {"login": 1001}) == (403, "PERMISSION_DENIED")
    vip = await masked.ok("GetAccountByLogin", {"login": 2001})
    assert (vip["group"], vip["currency"]) == ("vip-eur", "EUR")
    assert (await masked.ok("GetTradeByOrder", {"order": orders["b2001"]}))["login"] == 2001
    await masked.ok("DeleteBalanceSync", {"order": orders["b2001"]})
    groups = await masked.ok("GetGroups")
    assert groups["count"] == 1 and len(groups["rows"]) == 1
    row = groups["rows"][0]
    assert {key: row[key] for key in ("group", "currency", "digits")} == {
        "group": "vip-eur",
        "currency": "EUR",
        "digits": 2,
    }
    rows = (await masked.ok("GetUserBalanceList", {"logins": [1001, 2001]}))["rows"]
    assert [row["login"] for row in rows] == [2001]
    trades = await masked.ok("MngGetTradesByFilter", {})
    assert {row["login"] for row in trades["rows"]} == {2001}
    assert (
        trades["count"]
        == len(trades["rows"])
        == len((await admin.ok("MngGetTradesByFilter", {"login": 2001}))["rows"])
    )
    assert await masked.ok("MngGetTradesByFilter", {"login": 1001}) == {"rows": [], "count": 0}
    if role is MANAGER:
        assert await status(masked, "AddUser", {**DEMO_USER, "group": "demo"}) == (
            403,
            "PERMISSION_DENIED",
        )
        created = await masked.ok("AddUser", {**DEMO_USER, "group": "vip-eur"})
        assert created["currency"] == "EUR"
    assert await admin.ok("GetAccountByLogin", {"login": 1001}) == before
    assert (await admin.ok("GetTradeByOrder", {"order": orders["b1001"]}))["state"] == 3
    assert h.gateway.waiters.pending_count() == 0


async def test_admin_sees_every_group(make_gateway: GatewayFactory) -> None:
    """ADMIN sees and touches every group whatever masks its token carries."""
    h = await make_gateway(groups=TWO_GROUPS)
    _, orders = await two_group_world(h)
    admin = await h.client(role=ADMIN, groups=["vip*"])
    groups = await admin.ok("GetGroups")
    assert sorted(row["group"] for row in groups["rows"]) == ["demo", "vip-eur"]
    assert groups["count"] == 2
    assert (await admin.ok("GetAccountByLogin", {"login": 1001}))["group"] == "demo"
    assert (await admin.ok("GetTradeByOrder", {"order": orders["b1001"]}))["login"] == 1001
    await admin.ok("BalanceInSync", {"login": 1001, "amount": 1})
    rows = (await admin.ok("GetUserBalanceList", {"logins": [1001, 2001]}))["rows"]
    assert sorted(row["login"] for row in rows) == [1001, 2001]
    trades = await admin.ok("MngGetTradesByFilter", {})
    assert {row["login"] for row in trades["rows"]} == {1001, 2001}
    assert trades["count"] == 9
    assert h.gateway.waiters.pending_count() == 0


async def test_exact_mask_and_star_masks(make_gateway: GatewayFactory) -> None:
    """Masks match whole group names, `*` matching any run of characters."""
    h = await make_gateway(groups=TWO_GROUPS)
    await two_group_world(h)
    for masks, visible in (
        (["demo"], ["demo"]),
        (["vip"], []),
        (["*eur"], ["vip-eur"]),
        (["*"], ["demo", "vip-eur"]),
        (["de*", "vip-eur"], ["demo", "vip-eur"]),
        (["v*p*"], ["vip-eur"]),
    ):
        client = await h.client(role=DEALER, groups=masks)
        groups = await client.ok("GetGroups")
        assert sorted(row["group"] for row in groups["rows"]) == visible, masks
        assert groups["count"] == len(visible)
