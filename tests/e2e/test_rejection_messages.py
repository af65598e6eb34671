"""What each refused finance or AddUser operation says, and what an update or delete writes.

docs/protocol.md (2.3) keeps `message` free to change, but a message that names the wrong thing
is a defect: these pin that each one names the account, order, group or kind at fault.
"""

from __future__ import annotations

from typing import Any

from ..conftest import DEMO_USER, GatewayFactory, Harness
from ..fakes import FakeClock
from ..postgres import on_both_engines  # noqa: F401 (runs every test here on both engines)


async def refusal(client: Any, command: str, data: dict[str, Any]) -> tuple[int, str, str]:
    answer = await client.request(command, data)
    return answer["status"], answer["error"], answer["message"]


async def test_finance_refusals_name_what_is_wrong(gw: Harness) -> None:
    client = await gw.client()
    outsider = await gw.client(groups=["vip*"])
    for login in (1001, 1002):
        await gw.add_user(client, login)
    balance = (await client.ok("BalanceIn", {"login": 1001, "amount": 10}))["order"]
    credit = (await client.ok("CreditIn", {"login": 1001, "amount": 3, "comment": "c"}))["order"]
    deleted = (await client.ok("BalanceIn", {"login": 1001, "amount": 1}))["order"]
    await client.ok("DeleteBalance", {"order": deleted})
    answers = {
        "unknown login": await refusal(client, "BalanceIn", {"login": 4242, "amount": 1}),
        "outside groups": await refusal(outsider, "BalanceIn", {"login": 1001, "amount": 1}),
        "credit below 0": await refusal(
            client, "CreditOut", {"login": 1001, "amount": -5, "comment": "c"}
        ),
        "balance below 0": await refusal(client, "BalanceOut", {"login": 1001, "amount": -12.5}),
        "other login": await refusal(
            client, "BalanceIn", {"login": 1002, "amount": 1, "order": balance}
        ),
        "credit record": await refusal(
            client, "BalanceIn", {"login": 1001, "amount": 1, "order": credit}
        ),
        "balance record": await refusal(
            client, "CreditIn", {"login": 1001, "amount": 1, "order": balance, "comment": "c"}
        ),
        "deleted": await refusal(
            client, "BalanceIn", {"login": 1001, "amount": 1, "order": deleted}
        ),
        "delete unknown": await refusal(client, "DeleteBalance", {"order": 999}),
        "delete credit": await refusal(client, "DeleteBalance", {"order": credit}),
        "delete balance": await refusal(client, "DeleteCredit", {"order": balance}),
        "delete twice": await refusal(client, "DeleteBalance", {"order": deleted}),
    }
    assert answers == {
        "unknown login": (404, "USER_NOT_FOUND", "account 4242 not found"),
        "outside groups": (
            403,
            "PERMISSION_DENIED",
            "account 1001 is outside this session's groups",
        ),
        "credit below 0": (400, "NOT_ENOUGH_CREDIT", "credit of 1001 would become -2.00"),
        "balance below 0": (400, "NOT_ENOUGH_MONEY", "balance of 1001 would become -2.50"),
        "other login": (400, "INVALID_DATA", f"order {balance} belongs to another login"),
        "credit record": (400, "INVALID_DATA", f"order {credit} is a credit record"),
        "balance record": (400, "INVALID_DATA", f"order {balance} is a balance record"),
        "deleted": (400, "INVALID_DATA", f"order {deleted} is deleted"),
        "delete unknown": (404, "TRADE_NOT_FOUND", "order 999 not found"),
        "delete credit": (400, "INVALID_DATA", f"order {credit} is a credit record"),
        "delete balance": (400, "INVALID_DATA", f"order {balance} is a balance record"),
        "delete twice": (400, "INVALID_DATA", f"order {deleted} is already deleted"),
    }
    balances = await client.ok("GetUserBalanceList", {"logins": [1001, 1002]})
    assert [(r["balance"], r["credit"]) for r in balances["rows"]] == [(10.0, 3.0), (0.0, 0.0)]


async def test_add_user_refusals_name_what_is_wrong(gw: Harness) -> None:
    client = await gw.client()
    outsider = await gw.client(groups=["vip*"])
    await gw.add_user(client, 1001)
    answers = [
        await refusal(client, "AddUser", {**DEMO_USER, "login": 1002, "group": "nope"}),
        await refusal(outsider, "AddUser", {**DEMO_USER, "login": 1002}),
        await refusal(client, "AddUser", {**DEMO_USER, "login": 1001}),
    ]
    assert answers == [
        (404, "GROUP_NOT_FOUND", "group 'nope' not found"),
        (403, "PERMISSION_DENIED", "group 'demo' is outside this session's groups"),
        (409, "USER_EXISTS", "account 1001 exists"),
    ]
    assert (await client.request("GetAccountByLogin", {"login": 1002}))["status"] == 404


async def test_an_update_takes_the_times_it_is_given_and_a_delete_stamps_its_own(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """Sending a finance command with an existing `order` updates that record: its open and
    close times stay unless given; a delete keeps them and stamps `update_time` with now."""
    gw = await make_gateway(clock=frozen_clock)
    client = await gw.client()
    await gw.add_user(client, 1001)
    created_at = int(frozen_clock.wall())
    order = (await client.ok("BalanceIn", {"login": 1001, "amount": 10}))["order"]
    times = ("open_time", "close_time", "update_time")

    async def record_times() -> tuple[int, ...]:
        record = await client.ok("GetTradeByOrder", {"order": order})
        return tuple(record[name] for name in times)

    assert await record_times() == (created_at, created_at, created_at)
    frozen_clock.advance(60)
    await client.ok("BalanceIn", {"login": 1001, "amount": 11, "order": order})
    assert await record_times() == (created_at, created_at, created_at + 60)
    frozen_clock.advance(60)
    given = {"open_time": created_at - 3600, "close_time": created_at - 1800}
    await client.ok("BalanceIn", {"login": 1001, "amount": 12, "order": order, **given})
    assert await record_times() == (created_at - 3600, created_at - 1800, created_at + 120)
    frozen_clock.advance(60)
    await client.ok("DeleteBalance", {"order": order})
    assert await record_times() == (created_at - 3600, created_at - 1800, created_at + 180)
    problems, summary = gw.verification()  # versions 1..4 of the one order
    assert (problems, summary.split()[1]) == ([], "orders=1")


async def test_an_unknown_command_and_a_missing_token_say_so(gw: Harness) -> None:
    """The 404 names the command it does not know; a request with no token on a connection
    that never bound one is told the token is missing, not that it is invalid."""
    client = await gw.client()
    assert await refusal(client, "GetTheMoon", {}) == (
        404,
        "UNKNOWN_COMMAND",
        "unknown command 'GetTheMoon'",
    )
    fresh = await gw.client()
    answer = await fresh.request("GetGroups", {}, token=None)
    assert (answer["status"], answer["error"], answer["message"]) == (
        401,
        "INVALID_TOKEN",
        "missing token",
    )
