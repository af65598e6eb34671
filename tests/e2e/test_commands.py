"""Every command of docs/protocol.md section 5 over real TCP, and the envelope errors of section 2.

Most tests run on a `FakeClock` frozen at a whole second, so record times can be asserted exactly;
the clock never moves here, so no Sync timeout can fire behind a test's back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from manager_gateway.session.access import SessionType

from ..conftest import DEMO_USER, Client, GatewayFactory, Harness, money
from ..fakes import FakeClock
from ..postgres import on_both_engines  # noqa: F401 (runs every test here on both engines)

FINANCE = {"BalanceIn": 6, "CreditIn": 7, "BalanceOut": 8, "CreditOut": 9}
RECORD_KEYS = {
    "order",
    "login",
    "cmd",
    "state",
    "symbol",
    "volume",
    "profit",
    "comment",
    "open_time",
    "close_time",
    "update_time",
    "reason",
}


@pytest.fixture
async def h(make_gateway: GatewayFactory, frozen_clock: FakeClock) -> Harness:
    """A gateway on the frozen clock."""
    return await make_gateway(clock=frozen_clock)


def record(
    order: int,
    login: int,
    cmd: int,
    profit: float,
    comment: str,
    now: int,
    *,
    state: int = 3,
    open_time: int | None = None,
    close_time: int | None = None,
) -> dict[str, Any]:
    """The wire form of a finance record (section 5)."""
    return {
        "order": order,
        "login": login,
        "cmd": cmd,
        "state": state,
        "symbol": "",
        "volume": 0,
        "profit": profit,
        "comment": comment,
        "open_time": now if open_time is None else open_time,
        "close_time": now if close_time is None else close_time,
        "update_time": now,
        "reason": 7,
    }


async def balances(client: Client, login: int) -> dict[str, Any]:
    account = await client.ok("GetAccountByLogin", {"login": login})
    return {key: account[key] for key in ("login", "balance", "credit")}


async def error(client: Client, command: str, data: dict[str, Any], status: int, code: str) -> str:
    """Send, assert the exact error, return its message."""
    answer = await client.request(command, data)
    assert (answer["status"], answer.get("error")) == (status, code), answer
    assert set(answer) >= {"extID", "status", "error", "message"}
    return str(answer["message"])


async def funded(h: Harness, login: int = 1001, balance: float = 0, credit: float = 0) -> Client:
    """A manager client with an account `login` holding `balance` and `credit`."""
    client = await h.client()
    await h.add_user(client, login)
    if balance:
        await client.ok("BalanceInSync", {"login": login, "amount": balance})
    if credit:
        await client.ok("CreditInSync", {"login": login, "amount": credit, "comment": "seed"})
    return client


def finance_data(command: str, login: int, amount: float, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"login": login, "amount": amount, **extra}
    if command.startswith("Credit") and "comment" not in data:
        data["comment"] = "Credit op"
    return data


def signed(command: str, amount: float) -> float:
    return -amount if command.endswith("Out") else amount


# -- finance: create ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(FINANCE))
async def test_async_finance_acks_new_record(
    h: Harness, frozen_clock: FakeClock, command: str
) -> None:
    """The async form acks {accepted, order, state 10, login, cmd, amount} and records it."""
    now = int(frozen_clock.wall())
    client = await funded(h, balance=500, credit=500)
    amount = signed(command, 125.5)
    ack = await client.ok(command, finance_data(command, 1001, amount))
    assert ack == {
        "accepted": True,
        "order": ack["order"],
        "state": 10,
        "login": 1001,
        "cmd": FINANCE[command],
        "amount": amount,
    }
    comment = "Credit op" if command.startswith("Credit") else "Finance"
    stored = await client.ok("GetTradeByOrder", {"order": ack["order"]})
    assert stored == record(ack["order"], 1001, FINANCE[command], amount, comment, now)
    credit_kind = command.startswith("Credit")
    assert await balances(client, 1001) == {
        "login": 1001,
        "balance": 500 + (0 if credit_kind else amount),
        "credit": 500 + (amount if credit_kind else 0),
    }


@pytest.mark.parametrize("command", list(FINANCE))
async def test_sync_finance_answers_full_record(
    h: Harness, frozen_clock: FakeClock, command: str
) -> None:
    """The Sync form answers with the whole record, equal to its trade:event and GetTradeByOrder."""
    now = int(frozen_clock.wall())
    client = await funded(h, balance=500, credit=500)
    client.drain_events()
    amount = signed(command, 20.25)
    data = finance_data(command, 1001, amount, comment="Desk note", open_time=1000, close_time=2000)
    answer = await client.ok(command + "Sync", data)
    assert set(answer) == RECORD_KEYS
    assert answer == record(
        answer["order"],
        1001,
        FINANCE[command],
        amount,
        "Desk note",
        now,
        open_time=1000,
        close_time=2000,
    )
    event = await client.next_event()
    assert event == {"event": "trade:event", "type": 0, "data": answer}
    assert await client.ok("GetTradeByOrder", {"order": answer["order"]}) == answer
    assert h.gateway.waiters.pending_count() == 0


async def test_balance_comment_defaults_to_finance(h: Harness, frozen_clock: FakeClock) -> None:
    """BalanceIn/BalanceOut without a comment record "Finance"."""
    client = await funded(h, balance=100)
    rec_in = await client.ok("BalanceInSync", {"login": 1001, "amount": 5})
    rec_out = await client.ok("BalanceOutSync", {"login": 1001, "amount": -5})
    assert (rec_in["comment"], rec_out["comment"]) == ("Finance", "Finance")
    assert h.gateway.waiters.pending_count() == 0


@pytest.mark.parametrize("command", ["CreditIn", "CreditOut", "CreditInSync", "CreditOutSync"])
async def test_credit_requires_comment(h: Harness, command: str) -> None:
    """Credit commands without a comment are INVALID_DATA naming the field, nothing recorded."""
    client = await funded(h, credit=100)
    amount = -10 if "Out" in command else 10
    message = await error(client, command, {"login": 1001, "amount": amount}, 400, "INVALID_DATA")
    assert "comment" in message
    assert await balances(client, 1001) == {"login": 1001, "balance": 0.0, "credit": 100.0}
    assert h.gateway.waiters.pending_count() == 0


async def test_comment_length_limit(h: Harness) -> None:
    """A comment of 255 characters is accepted, 256 is INVALID_DATA."""
    client = await funded(h)
    ok = await client.ok("BalanceInSync", {"login": 1001, "amount": 1, "comment": "c" * 255})
    assert ok["comment"] == "c" * 255
    message = await error(
        client, "BalanceIn", {"login": 1001, "amount": 1, "comment": "c" * 256}, 400, "INVALID_DATA"
    )
    assert "comment" in message
    assert h.gateway.waiters.pending_count() == 0


# -- finance: update through `order` -----------------------------------------------------------


async def test_async_update_acks_state_11(h: Harness, frozen_clock: FakeClock) -> None:
    """`order` of an existing record updates it: ack state 11, amount and comment replaced."""
    now = int(frozen_clock.wall())
    client = await funded(h)
    first = await client.ok("BalanceIn", {"login": 1001, "amount": 100, "comment": "first"})
    ack = await client.ok(
        "BalanceIn", {"login": 1001, "amount": 40, "comment": "second", "order": first["order"]}
    )
    assert ack == {
        "accepted": True,
        "order": first["order"],
        "state": 11,
        "login": 1001,
        "cmd": 6,
        "amount": 40.0,
    }
    stored = await client.ok("GetTradeByOrder", {"order": first["order"]})
    assert stored == record(first["order"], 1001, 6, 40.0, "second", now)
    assert await balances(client, 1001) == {"login": 1001, "balance": 40.0, "credit": 0.0}
    listed = await client.ok("MngGetTradesByFilter", {"login": 1001})
    assert listed == {"rows": [stored], "count": 1}


async def test_sync_update_answers_update_event_and_takes_the_commands_cmd(
    h: Harness, frozen_clock: FakeClock
) -> None:
    """A Sync update answers with the EV_RECORD_UPDATE record; cmd becomes the command's own."""
    now = int(frozen_clock.wall())
    client = await funded(h, balance=500, credit=100)
    first = await client.ok("BalanceInSync", {"login": 1001, "amount": 100, "comment": "in"})
    client.drain_events()
    updated = await client.ok(
        "BalanceOutSync", {"login": 1001, "amount": -30, "comment": "out", "order": first["order"]}
    )
    assert updated == record(first["order"], 1001, 8, -30.0, "out", now)
    events = [await client.next_event(), await client.next_event()]
    assert events[0] == {"event": "trade:event", "type": 1, "data": updated}
    assert events[1] == {"event": "balance:event", "type": 1, "data": money(1001, 470.0, 100.0)}
    credit = await client.ok("CreditInSync", {"login": 1001, "amount": 50, "comment": "c1"})
    recredited = await client.ok(
        "CreditOutSync", {"login": 1001, "amount": -20, "comment": "c2", "order": credit["order"]}
    )
    assert (recredited["order"], recredited["cmd"], recredited["profit"]) == (
        credit["order"],
        9,
        -20.0,
    )
    assert await balances(client, 1001) == {"login": 1001, "balance": 470.0, "credit": 80.0}
    assert h.gateway.waiters.pending_count() == 0


async def test_unknown_order_creates_a_new_record_with_a_fresh_number(h: Harness) -> None:
    """An `order` that no record has creates a new record under a fresh number."""
    client = await funded(h)
    existing = await client.ok("BalanceIn", {"login": 1001, "amount": 1})
    ack = await client.ok("BalanceIn", {"login": 1001, "amount": 2, "order": 987654})
    assert ack["state"] == 10 and ack["order"] not in (987654, existing["order"])
    await error(client, "GetTradeByOrder", {"order": 987654}, 404, "TRADE_NOT_FOUND")
    synced = await client.ok("BalanceInSync", {"login": 1001, "amount": 3, "order": 987655})
    assert synced["order"] not in (987655, existing["order"], ack["order"])
    assert synced["profit"] == 3.0
    assert await balances(client, 1001) == {"login": 1001, "balance": 6.0, "credit": 0.0}
    assert h.gateway.waiters.pending_count() == 0


@pytest.mark.parametrize("sync", [False, True])
async def test_update_of_foreign_other_kind_or_deleted_order_is_invalid(
    h: Harness, sync: bool
) -> None:
    """`order` of another login, of the other kind, or deleted is INVALID_DATA; nothing changes."""
    client = await funded(h, balance=100, credit=100)
    await h.add_user(client, 1002)
    foreign = await client.ok("BalanceIn", {"login": 1002, "amount": 10})
    credit = await client.ok("CreditIn", {"login": 1001, "amount": 10, "comment": "c"})
    balance = await client.ok("BalanceIn", {"login": 1001, "amount": 10})
    deleted = await client.ok("BalanceIn", {"login": 1001, "amount": 10})
    await client.ok("DeleteBalance", {"order": deleted["order"]})
    suffix = "Sync" if sync else ""
    for command, data in (
        ("BalanceIn", {"login": 1001, "amount": 5, "order": foreign["order"]}),
        ("BalanceIn", {"login": 1001, "amount": 5, "order": credit["order"]}),
        ("CreditIn", {"login": 1001, "amount": 5, "comment": "x", "order": balance["order"]}),
        ("BalanceIn", {"login": 1001, "amount": 5, "order": deleted["order"]}),
    ):
        await error(client, command + suffix, data, 400, "INVALID_DATA")
    assert await balances(client, 1001) == {"login": 1001, "balance": 110.0, "credit": 110.0}
    assert await balances(client, 1002) == {"login": 1002, "balance": 10.0, "credit": 0.0}
    assert (await client.ok("GetTradeByOrder", {"order": deleted["order"]}))["state"] == 6
    assert h.gateway.waiters.pending_count() == 0


# -- finance: refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("BalanceOut", "NOT_ENOUGH_MONEY"),
        ("BalanceOutSync", "NOT_ENOUGH_MONEY"),
        ("CreditOut", "NOT_ENOUGH_CREDIT"),
        ("CreditOutSync", "NOT_ENOUGH_CREDIT"),
    ],
)
async def test_withdrawal_below_zero_is_refused_and_changes_nothing(
    h: Harness, command: str, code: str
) -> None:
    """A withdrawal beyond balance/credit is refused; balances and records stay as they were."""
    client = await funded(h, balance=100, credit=50)
    data = finance_data(command, 1001, -100.01 if "Balance" in command else -50.01)
    await error(client, command, data, 400, code)
    assert await balances(client, 1001) == {"login": 1001, "balance": 100.0, "credit": 50.0}
    assert (await client.ok("MngGetTradesByFilter", {"login": 1001}))["count"] == 2
    exact = finance_data(command, 1001, -100 if "Balance" in command else -50)
    await client.ok(command, exact)
    assert await balances(client, 1001) == {
        "login": 1001,
        "balance": 0.0 if "Balance" in command else 100.0,
        "credit": 0.0 if "Credit" in command else 50.0,
    }
    assert h.gateway.waiters.pending_count() == 0


@pytest.mark.parametrize("command", [*FINANCE, *(name + "Sync" for name in FINANCE)])
async def test_finance_on_unknown_login_is_user_not_found(h: Harness, command: str) -> None:
    """Finance on a login that does not exist is 404 USER_NOT_FOUND."""
    client = await h.client()
    amount = -1 if "Out" in command else 1
    await error(client, command, finance_data(command, 4242, amount), 404, "USER_NOT_FOUND")
    assert h.gateway.waiters.pending_count() == 0


async def test_amount_precision(h: Harness) -> None:
    """More decimals than the currency allows is refused; binary float noise is read as 0.30."""
    client = await funded(h)
    message = await error(
        client, "BalanceIn", {"login": 1001, "amount": 300.005}, 400, "INVALID_DATA"
    )
    assert "amount" in message
    await error(client, "BalanceInSync", {"login": 1001, "amount": 300.005}, 400, "INVALID_DATA")
    ack = await client.ok("BalanceIn", {"login": 1001, "amount": 0.1 + 0.2})
    assert 0.1 + 0.2 == 0.30000000000000004 and ack["amount"] == 0.3
    synced = await client.ok("BalanceInSync", {"login": 1001, "amount": 0.30000000000000004})
    assert synced["profit"] == 0.3
    assert await balances(client, 1001) == {"login": 1001, "balance": 0.6, "credit": 0.0}
    assert h.gateway.waiters.pending_count() == 0


async def test_amount_bounds_and_types(h: Harness) -> None:
    """|amount| up to 1e9 is accepted; above, zero, wrong sign or non-numbers are INVALID_DATA."""
    client = await funded(h)
    assert (await client.ok("BalanceIn", {"login": 1001, "amount": 1_000_000_000}))["amount"] == 1e9
    assert (await client.ok("BalanceOut", {"login": 1001, "amount": -1e9}))["amount"] == -1e9
    for command, amount in (
        ("BalanceIn", 1_000_000_000.01),
        ("BalanceOut", -1_000_000_000.01),
        ("BalanceIn", 1e300),
        ("BalanceIn", 0),
        ("BalanceOut", 0),
        ("BalanceIn", -5),
        ("BalanceOut", 5),
        ("CreditIn", -5),
        ("CreditOut", 5),
        ("BalanceIn", "10"),
        ("BalanceIn", True),
        ("BalanceIn", None),
        ("BalanceIn", [10]),
    ):
        data = finance_data(command, 1001, amount)  # type: ignore[arg-type]
        message = await error(client, command, data, 400, "INVALID_DATA")
        assert "amount" in message, (command, amount, message)
    for data in ({"login": 1001}, {"amount": 5}, {"login": "1001", "amount": 5}, {}):
        await error(client, "BalanceIn", data, 400, "INVALID_DATA")
    assert await balances(client, 1001) == {"login": 1001, "balance": 0.0, "credit": 0.0}


async def test_open_and_close_time_are_recorded(h: Harness, frozen_clock: FakeClock) -> None:
    """`open_time` / `close_time` given in unix seconds appear on the record."""
    client = await funded(h)
    ack = await client.ok(
        "BalanceIn", {"login": 1001, "amount": 1, "open_time": 1_600_000_000, "close_time": 17}
    )
    stored = await client.ok("GetTradeByOrder", {"order": ack["order"]})
    assert (stored["open_time"], stored["close_time"], stored["update_time"]) == (
        1_600_000_000,
        17,
        int(frozen_clock.wall()),
    )
    await error(
        client, "BalanceIn", {"login": 1001, "amount": 1, "open_time": -1}, 400, "INVALID_DATA"
    )


# -- deletes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "cmd"), [("Balance", 6), ("Credit", 7)])
async def test_async_delete_acks_state_12(
    h: Harness, frozen_clock: FakeClock, kind: str, cmd: int
) -> None:
    """DeleteBalance/DeleteCredit ack state 12, reverse the amount, leave the record in state 6."""
    now = int(frozen_clock.wall())
    client = await funded(h, balance=10, credit=10)
    made = await client.ok(f"{kind}In", finance_data(f"{kind}In", 1001, 25, comment="to delete"))
    ack = await client.ok(f"Delete{kind}", {"order": made["order"]})
    assert ack == {
        "accepted": True,
        "order": made["order"],
        "state": 12,
        "login": 1001,
        "cmd": cmd,
        "amount": 25.0,
    }
    stored = await client.ok("GetTradeByOrder", {"order": made["order"]})
    assert stored == record(made["order"], 1001, cmd, 25.0, "to delete", now, state=6)
    assert await balances(client, 1001) == {"login": 1001, "balance": 10.0, "credit": 10.0}


@pytest.mark.parametrize(("kind", "cmd"), [("Balance", 8), ("Credit", 9)])
async def test_delete_sync_answers_the_delete_event(
    h: Harness, frozen_clock: FakeClock, kind: str, cmd: int
) -> None:
    """DeleteXSync answers with the EV_RECORD_DELETE record (state 6); an Out deleted gives back."""
    now = int(frozen_clock.wall())
    client = await funded(h, balance=100, credit=100)
    made = await client.ok(f"{kind}Out", finance_data(f"{kind}Out", 1001, -40, comment="out"))
    client.drain_events()
    deleted = await client.ok(f"Delete{kind}Sync", {"order": made["order"]})
    assert deleted == record(made["order"], 1001, cmd, -40.0, "out", now, state=6)
    trade = await client.next_event()
    assert trade == {"event": "trade:event", "type": 2, "data": deleted}
    balance = await client.next_event()
    assert balance == {"event": "balance:event", "type": 1, "data": money(1001, 100.0, 100.0)}
    assert h.gateway.waiters.pending_count() == 0


@pytest.mark.parametrize("sync", [False, True])
async def test_delete_refusals(h: Harness, sync: bool) -> None:
    """Wrong kind and already deleted are INVALID_DATA, unknown order TRADE_NOT_FOUND."""
    client = await funded(h, balance=100, credit=100)
    balance = await client.ok("BalanceIn", {"login": 1001, "amount": 10})
    credit = await client.ok("CreditIn", {"login": 1001, "amount": 10, "comment": "c"})
    gone = await client.ok("BalanceIn", {"login": 1001, "amount": 10})
    await client.ok("DeleteBalance", {"order": gone["order"]})
    suffix = "Sync" if sync else ""
    await error(client, "DeleteBalance" + suffix, {"order": credit["order"]}, 400, "INVALID_DATA")
    await error(client, "DeleteCredit" + suffix, {"order": balance["order"]}, 400, "INVALID_DATA")
    await error(client, "DeleteBalance" + suffix, {"order": gone["order"]}, 400, "INVALID_DATA")
    await error(client, "DeleteBalance" + suffix, {"order": 999_999}, 404, "TRADE_NOT_FOUND")
    await error(client, "DeleteCredit" + suffix, {"order": 999_999}, 404, "TRADE_NOT_FOUND")
    for data in ({}, {"order": "1"}, {"order": 0}):
        await error(client, "DeleteBalance" + suffix, data, 400, "INVALID_DATA")
    assert await balances(client, 1001) == {"login": 1001, "balance": 110.0, "credit": 110.0}
    assert h.gateway.waiters.pending_count() == 0


@pytest.mark.parametrize(
    ("kind", "code"), [("Balance", "NOT_ENOUGH_MONEY"), ("Credit", "NOT_ENOUGH_CREDIT")]
)
@pytest.mark.parametrize("sync", [False, True])
async def test_delete_that_would_go_negative_is_refused(
    h: Harness, kind: str, code: str, sync: bool
) -> None:
    """Deleting a deposit already spent is refused and changes nothing."""
    client = await funded(h)
    deposit = await client.ok(f"{kind}In", finance_data(f"{kind}In", 1001, 100))
    await client.ok(f"{kind}Out", finance_data(f"{kind}Out", 1001, -60))
    command = f"Delete{kind}" + ("Sync" if sync else "")
    await error(client, command, {"order": deposit["order"]}, 400, code)
    left = {"balance": 0.0, "credit": 0.0, kind.lower(): 40.0}
    assert await balances(client, 1001) == {"login": 1001, **left}
    assert (await client.ok("GetTradeByOrder", {"order": deposit["order"]}))["state"] == 3
    assert h.gateway.waiters.pending_count() == 0


# -- accounts ----------------------------------------------------------------------------------


async def test_add_user_allocates_a_login_when_omitted(h: Harness) -> None:
    """AddUser without `login` allocates distinct logins and answers {login, leverage, currency}."""
    client = await h.client()
    first = await client.ok("AddUser", {**DEMO_USER, "leverage": 200})
    second = await client.ok("AddUser", DEMO_USER)
    assert first == {"login": first["login"], "leverage": 200, "currency": "USD"}
    assert isinstance(first["login"], int) and isinstance(second["login"], int)
    assert first["login"] != second["login"]
    account = await client.ok("GetAccountByLogin", {"login": first["login"]})
    assert (account["login"], account["leverage"]) == (first["login"], 200)
    assert account["group"] == "demo"
    explicit = await client.ok("AddUser", {**DEMO_USER, "login": 5555})
    assert explicit == {"login": 5555, "leverage": 100, "currency": "USD"}
    third = await client.ok("AddUser", DEMO_USER)
    assert third["login"] not in (first["login"], second["login"], 5555)


async def test_the_first_automatic_login_of_a_new_ledger_is_1000(
    make_gateway: GatewayFactory,
) -> None:
    h = await make_gateway()
    assert (await (await h.client()).ok("AddUser", DEMO_USER))["login"] == 1000


async def test_automatic_logins_skip_taken_ones_and_carry_on_after_a_restart(
    make_gateway: GatewayFactory,
) -> None:
    """AddUser without a login takes the next free one, stepping over logins given explicitly;
    after a restart it carries on from where it was, never reusing one."""
    first = await make_gateway()
    client = await first.client()
    for login in (1000, 1001, 1003):
        await client.ok("AddUser", {**DEMO_USER, "login": login})
    automatic = [(await client.ok("AddUser", DEMO_USER))["login"] for _ in range(3)]
    assert automatic == [1002, 1004, 1005]
    await first.close_clients()
    await first.gateway.shutdown()
    again = await make_gateway(data_dir=first.data_dir)
    client = await again.client()
    assert (await client.ok("AddUser", DEMO_USER))["login"] == 1006


async def test_add_user_refusals(h: Harness) -> None:
    """USER_EXISTS 409, GROUP_NOT_FOUND 404, and INVALID_DATA naming each bad field."""
    client = await h.client()
    await h.add_user(client, 1001)
    await error(client, "AddUser", {**DEMO_USER, "login": 1001}, 409, "USER_EXISTS")
    await error(client, "AddUser", {**DEMO_USER, "group": "nope"}, 404, "GROUP_NOT_FOUND")
    for field, value in (
        ("password", "12345"),
        ("password", "p" * 65),
        ("leverage", 0),
        ("leverage", 10_001),
        ("leverage", "100"),
        ("enable", 2),
        ("enable", -1),
        ("email", None),
        ("group", None),
        ("name", None),
        ("login", "77"),
        ("login", 0),
    ):
        data = {**DEMO_USER, field: value}
        if value is None:
            del data[field]
        message = await error(client, "AddUser", data, 400, "INVALID_DATA")
        assert field in message, (field, value, message)
    answer = await client.ok("GetUserBalanceList", {"logins": list(range(1000, 1010))})
    assert [row["login"] for row in answer["rows"]] == [1001]


async def test_add_user_accepts_the_edges(h: Harness) -> None:
    """Password of 6 and 64 characters, leverage 1 and 10000, enable 0 are accepted."""
    client = await h.client()
    for login, fields in (
        (2001, {"password": "p" * 6, "leverage": 1, "enable": 0}),
        (2002, {"password": "p" * 64, "leverage": 10_000, "enable": 1}),
    ):
        answer = await client.ok("AddUser", {**DEMO_USER, "login": login, **fields})
        assert answer == {"login": login, "leverage": fields["leverage"], "currency": "USD"}
        account = await client.ok("GetAccountByLogin", {"login": login})
        assert (account["enable"], account["leverage"]) == (fields["enable"], fields["leverage"])


async def test_get_account_by_login(h: Harness) -> None:
    """GetAccountByLogin answers the profile plus money fields, never the password."""
    client = await funded(h, balance=150.5, credit=20)
    account = await client.ok("GetAccountByLogin", {"login": 1001})
    assert {key: account[key] for key in ("group", "name", "email", "leverage", "enable")} == {
        "group": "demo",
        "name": "Test User",
        "email": "user@example.com",
        "leverage": 100,
        "enable": 1,
    }
    assert {key: account[key] for key in money(1001, 0, 0)} == money(1001, 150.5, 20.0)
    assert account["currency"] == "USD"
    assert abs(account["registration_time"] - time.time()) < 3600
    profile = ["group", "name", "email", "leverage", "enable", "currency", "registration_time"]
    assert sorted(account) == sorted([*money(1001, 0, 0), *profile])
    assert not any("password" in key or "hash" in key for key in account)
    assert DEMO_USER["password"] not in orjson.dumps(account).decode()
    await error(client, "GetAccountByLogin", {"login": 4242}, 404, "USER_NOT_FOUND")
    await error(client, "GetAccountByLogin", {"login": "1001"}, 400, "INVALID_DATA")
    await error(client, "GetAccountByLogin", {}, 400, "INVALID_DATA")


async def test_get_user_balance_list_leaves_unknown_logins_out(h: Harness) -> None:
    """GetUserBalanceList answers one row per existing login, unknown ones left out."""
    client = await funded(h, balance=10, credit=5)
    await h.add_user(client, 1002)
    answer = await client.ok("GetUserBalanceList", {"logins": [4242, 1002, 1001, 9999]})
    assert sorted(answer["rows"], key=lambda row: row["login"]) == [
        money(1001, 10.0, 5.0),
        money(1002, 0.0, 0.0),
    ]
    assert set(answer) == {"rows"}
    assert await client.ok("GetUserBalanceList", {"logins": [4242]}) == {"rows": []}
    await error(client, "GetUserBalanceList", {"logins": "1001"}, 400, "INVALID_DATA")
    await error(client, "GetUserBalanceList", {}, 400, "INVALID_DATA")


async def test_get_groups(h: Harness) -> None:
    """GetGroups lists the configured default group `demo`, USD, 2 digits."""
    client = await h.client()
    answer = await client.ok("GetGroups", {})
    assert answer["count"] == 1 and len(answer["rows"]) == 1
    row = answer["rows"][0]
    assert {key: row[key] for key in ("group", "currency", "digits")} == {
        "group": "demo",
        "currency": "USD",
        "digits": 2,
    }


# -- trades ------------------------------------------------------------------------------------


async def test_get_trade_by_order(h: Harness, frozen_clock: FakeClock) -> None:
    """GetTradeByOrder answers the current record; unknown orders are TRADE_NOT_FOUND."""
    client = await funded(h)
    ack = await client.ok("CreditIn", {"login": 1001, "amount": 7, "comment": "bonus"})
    stored = await client.ok("GetTradeByOrder", {"order": ack["order"]})
    assert stored == record(ack["order"], 1001, 7, 7.0, "bonus", int(frozen_clock.wall()))
    await error(client, "GetTradeByOrder", {"order": 999_999}, 404, "TRADE_NOT_FOUND")
    await error(client, "GetTradeByOrder", {"order": -1}, 400, "INVALID_DATA")


async def test_trades_by_filter(h: Harness) -> None:
    """MngGetTradesByFilter filters by login, cmd, from, to; pages; newest first; count is total."""
    client = await funded(h)
    await h.add_user(client, 1002)
    a = await client.ok("BalanceIn", {"login": 1001, "amount": 10, "open_time": 100})
    b = await client.ok("CreditIn", {"login": 1001, "amount": 20, "comment": "c", "open_time": 200})
    d = await client.ok("BalanceIn", {"login": 1002, "amount": 40, "open_time": 250})
    c = await client.ok("BalanceIn", {"login": 1001, "amount": 30, "open_time": 300})
    full = {
        ack["order"]: await client.ok("GetTradeByOrder", {"order": ack["order"]})
        for ack in (a, b, c, d)
    }

    async def orders(data: dict[str, Any]) -> tuple[list[int], int]:
        answer = await client.ok("MngGetTradesByFilter", data)
        assert set(answer) == {"rows", "count"}
        assert all(row == full[row["order"]] for row in answer["rows"])
        return [row["order"] for row in answer["rows"]], answer["count"]

    a, b, c, d = a["order"], b["order"], c["order"], d["order"]
    assert await orders({}) == ([c, d, b, a], 4)
    assert await orders({"login": 1001}) == ([c, b, a], 3)
    assert await orders({"login": 1002}) == ([d], 1)
    assert await orders({"login": 4242}) == ([], 0)
    assert await orders({"cmd": 6}) == ([c, d, a], 3)
    assert await orders({"cmd": 7, "login": 1001}) == ([b], 1)
    assert await orders({"from": 200}) == ([c, d, b], 3)
    assert await orders({"to": 200}) == ([b, a], 2)
    assert await orders({"from": 200, "to": 250}) == ([d, b], 2)
    assert await orders({"limit": 2}) == ([c, d], 4)
    assert await orders({"limit": 2, "offset": 1}) == ([d, b], 4)
    assert await orders({"offset": 10}) == ([], 4)
    assert await orders({"login": 1001, "cmd": 6, "from": 150, "limit": 1}) == ([c], 1)
    for data in ({"limit": 0}, {"limit": 50_001}, {"offset": -1}, {"from": "1"}, {"login": "x"}):
        await error(client, "MngGetTradesByFilter", data, 400, "INVALID_DATA")


async def test_trades_by_filter_default_limit_is_1000(h: Harness) -> None:
    """Without `limit` at most 1000 rows come back, newest first; `count` is still the total."""
    client = await funded(h)
    futures, frames = [], []
    for index in range(1001):
        ext_id = f"bulk-{index}"
        futures.append(client.expect(ext_id))
        frames.append(
            orjson.dumps(
                {
                    "command": "BalanceIn",
                    "extID": ext_id,
                    "__token": client.token,
                    "data": {"login": 1001, "amount": 1},
                }
            )
            + b"\r\n"
        )
    client.send_raw(b"".join(frames))
    acks = await asyncio.wait_for(asyncio.gather(*futures), 30)
    assert all(ack["status"] == 200 for ack in acks)
    newest_first = sorted((ack["data"]["order"] for ack in acks), reverse=True)
    page = await client.ok("MngGetTradesByFilter", {"login": 1001})
    assert page["count"] == 1001
    assert [row["order"] for row in page["rows"]] == newest_first[:1000]
    everything = await client.ok("MngGetTradesByFilter", {"limit": 50_000})
    assert [row["order"] for row in everything["rows"]] == newest_first
    assert everything["count"] == 1001


# -- subscriptions and health ------------------------------------------------------------------


async def test_subscription_commands_answer_200(h: Harness) -> None:
    """Subscribe, Unsubscribe, SubscribeAll and UnsubscribeAll all answer 200."""
    client = await h.client()
    for command, data in (
        ("Subscribe", {"chanels": ["EURUSD", "GBPUSD"]}),
        ("Unsubscribe", {"chanels": ["EURUSD"]}),
        ("SubscribeAll", {}),
        ("UnsubscribeAll", {}),
        ("Subscribe", {"chanels": []}),
    ):
        answer = await client.request(command, data)
        assert answer["status"] == 200, (command, answer)
    await error(client, "Subscribe", {"chanels": "EURUSD"}, 400, "INVALID_DATA")
    await error(client, "Subscribe", {}, 400, "INVALID_DATA")


async def test_health_check_needs_no_token(h: Harness, frozen_clock: FakeClock) -> None:
    """HealthCheck without a token answers {"status": "ok", "time": <unix ms>} under its extID,
    the time being the gateway clock's, and nothing else."""
    client = await Client.connect(h.port)
    h.clients.append(client)
    answer = await client.request("HealthCheck", {}, ext_id="hc-1")
    assert answer == {
        "extID": "hc-1",
        "status": 200,
        "data": {"status": "ok", "time": int(frozen_clock.wall()) * 1000},
    }


# -- envelope errors over TCP ------------------------------------------------------------------


async def roundtrip_after(client: Client, raw: bytes) -> dict[str, Any]:
    """Send `raw`, then a HealthCheck; once that is answered, the reply to `raw` is the orphan."""
    client.orphans.clear()
    client.send_raw(raw)
    assert (await client.ok("HealthCheck"))["status"] == "ok"  # the connection still works
    assert len(client.orphans) == 1, client.orphans
    return client.orphans.pop()


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"command": "HealthCheck", "extID": "x"',
        b'{"command": "HealthCheck", "extID": "x", "data": {"a": NaN}}',
        b'{"command": "HealthCheck", "extID": "x", "data": {"a": Infinity}}',
        b'{"command": "HealthCheck", "extID": "\xff\xfe"}',
        b"[1, 2, 3]",
        b'"HealthCheck"',
        b"42",
        b"null",
        b"[" * 2000 + b"]" * 2000,
    ],
)
async def test_invalid_json_is_400_with_null_ext_id(gw: Harness, raw: bytes) -> None:
    """Unparseable frames and non-objects get 400 INVALID_JSON with extID null."""
    client = await gw.client()
    answer = await roundtrip_after(client, raw + b"\r\n")
    assert answer["extID"] is None and answer["status"] == 400
    assert answer["error"] == "INVALID_JSON" and isinstance(answer["message"], str)


@pytest.mark.parametrize(
    "envelope",
    [
        {"command": "HealthCheck"},
        {"command": "HealthCheck", "extID": None},
        {"command": "HealthCheck", "extID": 17},
        {"command": "HealthCheck", "extID": ""},
        {"command": "HealthCheck", "extID": "x" * 129},
        {"command": "HealthCheck", "extID": ["a"]},
    ],
)
async def test_missing_or_invalid_ext_id_is_invalid_request_with_null_ext_id(
    gw: Harness, envelope: dict[str, Any]
) -> None:
    """A missing or invalid extID is 400 INVALID_REQUEST answered with extID null."""
    client = await gw.client()
    answer = await roundtrip_after(client, orjson.dumps(envelope) + b"\r\n")
    assert (answer["extID"], answer["status"], answer["error"]) == (None, 400, "INVALID_REQUEST")


@pytest.mark.parametrize(
    "envelope",
    [
        {"extID": "e1", "data": {}},
        {"extID": "e1", "command": 5},
        {"extID": "e1", "command": "GetGroups", "data": [1]},
        {"extID": "e1", "command": "GetGroups", "data": "x"},
        {"extID": "e1", "command": "GetGroups", "data": 3},
    ],
)
async def test_bad_envelope_echoes_ext_id(gw: Harness, envelope: dict[str, Any]) -> None:
    """No command or data not an object: 400 INVALID_REQUEST under the request's extID."""
    client = await gw.client()
    future = client.expect("e1")
    client.send_raw(orjson.dumps({**envelope, "__token": client.token}) + b"\r\n")
    answer = await asyncio.wait_for(future, 5)
    assert (answer["extID"], answer["status"], answer["error"]) == ("e1", 400, "INVALID_REQUEST")
    assert (await client.ok("GetGroups"))["count"] == 1


async def test_ext_id_of_128_characters_is_echoed(gw: Harness) -> None:
    """An extID of exactly 128 characters is valid and echoed."""
    client = await gw.client()
    answer = await client.request("HealthCheck", {}, ext_id="x" * 128)
    assert (answer["extID"], answer["status"]) == ("x" * 128, 200)


async def test_unknown_command_is_404(gw: Harness) -> None:
    """An unknown command is 404 UNKNOWN_COMMAND under its extID; the connection goes on."""
    client = await gw.client()
    for name in ("NoSuchCommand", "healthcheck", "balancein"):
        answer = await client.request(name, {})
        assert (answer["status"], answer["error"]) == (404, "UNKNOWN_COMMAND")
    assert (await client.ok("GetGroups"))["count"] == 1


async def test_data_absent_or_null_means_empty(gw: Harness) -> None:
    """`data` missing or null is taken as {}."""
    client = await gw.client()
    for envelope in (
        {"command": "GetGroups", "extID": "n1"},
        {"command": "GetGroups", "extID": "n2", "data": None},
    ):
        future = client.expect(envelope["extID"])
        client.send_raw(orjson.dumps({**envelope, "__token": client.token}) + b"\r\n")
        answer = await asyncio.wait_for(future, 5)
        assert answer["status"] == 200 and answer["data"]["count"] == 1


async def test_ext_id_alias_and_framing_on_the_raw_stream(gw: Harness) -> None:
    """`extId` is accepted and answered as `extID`; LF-only frames work; blank lines are ignored;
    every response ends with \\r\\n."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        token = gw.token()
        writer.write(
            b"\r\n\n\r\n"
            + orjson.dumps({"command": "HealthCheck", "extId": "alias-1"})
            + b"\n"
            + b"\n\r\n"
            + orjson.dumps({"command": "GetGroups", "extID": "lf-2", "__token": token})
            + b"\n"
            + orjson.dumps({"command": "GetGroups", "extId": "crlf-3"})
            + b"\r\n"
            + b"{broken\n"
            + orjson.dumps({"command": "HealthCheck", "extID": "last-4"})
            + b"\r\n"
        )
        lines = [await asyncio.wait_for(reader.readline(), 5) for _ in range(5)]
        for line in lines:
            assert line.endswith(b"\r\n") and b"\n" not in line[:-2] and b"\r" not in line[:-2]
        answers = [orjson.loads(line) for line in lines]
        by_id = {answer["extID"]: answer for answer in answers}
        assert set(by_id) == {"alias-1", "lf-2", "crlf-3", None, "last-4"}
        assert "extId" not in by_id["alias-1"] and by_id["alias-1"]["status"] == 200
        assert by_id["lf-2"]["status"] == 200 and by_id["crlf-3"]["status"] == 200
        assert by_id[None]["error"] == "INVALID_JSON"
        assert by_id["last-4"]["status"] == 200
    finally:
        writer.close()
        await writer.wait_closed()


async def test_connection_survives_a_run_of_bad_requests(gw: Harness) -> None:
    """After every kind of bad request the same connection still serves state changes."""
    client = await gw.client()
    await gw.add_user(client, 1001)
    bad = [
        b"{oops",
        b"[]",
        b'{"command":"HealthCheck"}',
        b'{"extID":"b1"}',
        b'{"extID":"b2","command":"GetGroups","data":7}',
        b'{"extID":"b3","command":"Nope"}',
        b'{"extID":"b4","command":"BalanceIn","data":{"login":1001,"amount":"x"}}',
    ]
    client.send_raw(b"\r\n".join(bad) + b"\r\n")
    record_ = await client.ok("BalanceInSync", {"login": 1001, "amount": 1})
    assert record_["profit"] == 1.0
    codes = sorted(answer["error"] for answer in client.orphans)
    assert codes == sorted(
        [
            "INVALID_JSON",
            "INVALID_JSON",
            "INVALID_REQUEST",
            "INVALID_REQUEST",
            "INVALID_REQUEST",
            "UNKNOWN_COMMAND",
            "INVALID_DATA",
        ]
    )
    assert gw.gateway.waiters.pending_count() == 0


async def test_user_role_sees_own_account_data_shape(h: Harness) -> None:
    """A USER token (sub = its login) may read its own finance record with GetTradeByOrder."""
    manager = await funded(h)
    ack = await manager.ok("BalanceIn", {"login": 1001, "amount": 3})
    user = await h.client(role=SessionType.USER, login=1001)
    stored = await user.ok("GetTradeByOrder", {"order": ack["order"]})
    assert stored == await manager.ok("GetTradeByOrder", {"order": ack["order"]})
