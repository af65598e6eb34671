"""A restart reads back exactly what was committed: every account field, every record version and
every settlement journal row, as the answers that depend on them show."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from manager_gateway.ledger.rows import JOURNAL_COLUMNS
from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.verify import verify_ledger

from ..conftest import DEMO_USER, GatewayFactory
from ..platform import Platform, adjustment, base_url, cancellation, fund, settlement_gateway


def ledger_rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of the ledger as stored, read behind the gateway's back."""
    db = sqlite3.connect(data_dir / LEDGER_FILE)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


#: Every account column but the money: what a deposit after the restart must write back unchanged.
PROFILE_COLUMNS = (
    "SELECT login, grp, name, email, password_hash, leverage, enable, currency, digits,"
    " registration_time"
    " FROM accounts ORDER BY login"
)

PROFILES = {
    2001: {"group": "demo", "name": "Ada Lovelace", "email": "ada@example.com", "leverage": 50},
    2002: {"group": "demo", "name": "Alan Turing", "email": "alan@example.org", "enable": 0},
}


async def test_accounts_and_records_read_back_the_same_after_a_restart(
    make_gateway: GatewayFactory,
) -> None:
    first = await make_gateway()
    client = await first.client()
    for login, fields in PROFILES.items():
        await client.ok("AddUser", {**DEMO_USER, **fields, "login": login})
    kept = (await client.ok("BalanceIn", {"login": 2001, "amount": 12.34}))["order"]
    updated = (await client.ok("CreditIn", {"login": 2001, "amount": 5, "comment": "c"}))["order"]
    await client.ok("CreditIn", {"login": 2001, "amount": 7, "order": updated, "comment": "c2"})
    deleted = (await client.ok("BalanceIn", {"login": 2002, "amount": 3}))["order"]
    await client.ok("DeleteBalance", {"order": deleted})
    orders = (kept, updated, deleted)

    async def seen(c: Any) -> dict[str, Any]:
        return {
            "accounts": [await c.ok("GetAccountByLogin", {"login": login}) for login in PROFILES],
            "records": [await c.ok("GetTradeByOrder", {"order": order}) for order in orders],
            "trades": await c.ok("MngGetTradesByFilter", {}),
        }

    before = await seen(client)
    assert [a["name"] for a in before["accounts"]] == ["Ada Lovelace", "Alan Turing"]
    assert [r["profit"] for r in before["records"]] == [12.34, 7.0, 3.0]
    await first.close_clients()
    await first.gateway.shutdown()

    stored = ledger_rows(first.data_dir, PROFILE_COLUMNS)
    assert [row[4][:7] for row in stored] == ["scrypt$"] * 2  # the password hashes

    again = await make_gateway(data_dir=first.data_dir)
    client = await again.client()
    assert await seen(client) == before
    # Each account row is written whole by a balance change: what was read back, the password
    # hash included (no answer shows it), is what goes back to the disk.
    for login in PROFILES:
        await client.ok("BalanceIn", {"login": login, "amount": 1})
    assert ledger_rows(again.data_dir, PROFILE_COLUMNS) == stored
    assert verify_ledger(again.data_dir)[0] == []


async def test_settlement_answers_the_same_after_a_restart(make_gateway: GatewayFactory) -> None:
    """Replays of a confirmed, a refused and a cancelled adjustment, of a cancel and of a
    tombstone answer as before the restart; a new cancel reverses an adjustment made before it."""
    first = await settlement_gateway(make_gateway)
    client = await first.client()
    await fund(client, first, 3001, credit=100)
    confirmed = adjustment(3001, "30.00", userName="alice")
    refused = adjustment(3001, "1000.00", userName="alice")
    cancelled = adjustment(3001, "20.00", userName="alice")
    cancel = cancellation(3001, cancelled["requestUniqueNo"], "20.00")
    tombstone = cancellation(3001, "never-sent", "5.00")
    bodies = [("adjust", b) for b in (confirmed, refused, cancelled)]
    bodies += [("cancel", cancel), ("cancel", tombstone)]

    async def answers(h: Any) -> list[tuple[str, str, Any]]:
        async with aiohttp.ClientSession() as session:
            platform = Platform(base_url(h), session)
            seen = []
            for route, body in bodies:
                answer = await getattr(platform, route)(body)
                seen.append((answer["code"], answer["msg"], answer["data"]))
            seen.append(("wallet", await platform.wallet(3001), None))
            return seen

    before = await answers(first)
    assert [(code, data) for code, _, data in before] == [
        ("0", {"order": 2, "amount": "-30.00", "amountDigits": 2, "walletAmount": "70.00"}),
        ("INSUFFICIENT_FUNDS", {}),
        ("0", {"order": 3, "amount": "-20.00", "amountDigits": 2, "walletAmount": "50.00"}),
        ("0", {"order": 3, "amount": "20.00", "amountDigits": 2, "walletAmount": "70.00"}),
        ("US_0000002", {}),
        ("wallet", None),
    ]
    assert before[-1][1] == "70.00"
    await first.close_clients()
    await first.gateway.shutdown()
    row = f"SELECT {JOURNAL_COLUMNS} FROM settlement_journal WHERE number = '{{}}'"
    (confirmed_row,) = ledger_rows(first.data_dir, row.format(confirmed["requestUniqueNo"]))

    again = await settlement_gateway(make_gateway, data_dir=first.data_dir)
    assert await answers(again) == before
    async with aiohttp.ClientSession() as session:
        platform = Platform(base_url(again), session)
        late_cancel = cancellation(3001, confirmed["requestUniqueNo"], "30.00")
        late = await platform.cancel(late_cancel)
        assert late["code"] == "0"
        assert await platform.wallet(3001) == "100.00"
        blocked = await platform.adjust(
            adjustment(3001, "5.00", requestUniqueNo="never-sent", userName="alice")
        )
        assert blocked["code"] == "REQUEST_CANCELLED"  # the tombstone came back with the restart
        # A second cancel of the adjustment cancelled before the restart moves nothing.
        twice = await platform.cancel(cancellation(3001, cancelled["requestUniqueNo"], "20.00"))
        assert (twice["code"], twice["msg"]) == ("0", "success (already cancelled)")
        assert await platform.wallet(3001) == "100.00"
    # The adjustment read back and then cancelled is written whole again: as it was, but for
    # the cancel's number.
    (after,) = ledger_rows(again.data_dir, row.format(confirmed["requestUniqueNo"]))
    cancelled_by = late_cancel["requestUniqueNo"]
    assert after == (*confirmed_row[:-3], cancelled_by, *confirmed_row[-2:])
    assert confirmed_row[7] == "alice" and confirmed_row[-3] is None  # user_name, cancelled_by
    assert verify_ledger(again.data_dir)[0] == []
