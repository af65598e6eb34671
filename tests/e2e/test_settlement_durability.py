"""External Settlement across a SIGKILL: what was answered `0` survives once, cancels stay final.

A real `manager-gateway serve` (ledger `synchronous=FULL`) takes a seeded burst of concurrent
adjustments and cancels over a few wallets and is SIGKILLed mid-burst, then restarted on the same
data dir. The platform then does what it would do: it replays, cancels what failed or got no
answer, cancels some of what was confirmed, and sends late adjustments after tombstones. A `0`
sent before its commit shows up as a confirmed adjustment missing after the kill; a double apply
as a second finance record for one number, a second deletion of one record, or a wallet off the
journal's net movement. (A missing fsync does not show: a SIGKILL leaves the page cache to the
kernel, and only a power cut would lose it.)

Reproduce a run with `SETTLEMENT_KILL_SEED=<n>`; the default seed is fixed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import signal
import sqlite3
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from manager_gateway.ledger.rows import JOURNAL_COLUMNS, journal_row
from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.runtime.journal import REQUESTS, JournalRow
from manager_gateway.settlement.http import ADJUST, CANCEL

from ..conftest import DEMO_USER, Client, unused_port
from ..platform import COMPANY, Platform, adjustment, cancellation
from .test_durability import (
    Server,
    admin_token,
    assert_ledger_verifies,
    close_all,
    connect,
)

pytestmark = pytest.mark.slow

KILL_SEED = int(os.environ.get("SETTLEMENT_KILL_SEED", "20260314"))
PORT_ATTEMPTS = 5
LOGINS = (9101, 9102, 9103, 9104)
FUNDED = Decimal("300.00")  # before the burst: deductions meet INSUFFICIENT_FUNDS now and then
TOPPED_UP = Decimal("5000.00")  # after the restart: no reversal of a credit can be refused
BURST = 480  # requests prepared; the kill cuts most of them off
WINDOW = 48  # requests in flight at once
KILL_AFTER = (80, 200)  # bounds of the (seeded) number of answers before the kill
BURST_TIMEOUT_S = 60
PHASE_CONCURRENCY = 32
CONFIRMED_CANCELLED = 3  # after the restart, one confirmed adjustment in this many is cancelled


@dataclass
class Item:
    """One platform request of the burst and what came back before the kill."""

    route: str
    body: dict[str, Any]
    sent: bool = False
    answer: dict[str, Any] | None = None  # the envelope, if one arrived before the kill

    @property
    def number(self) -> str:
        number: str = self.body["requestUniqueNo"]
        return number

    @property
    def confirmed(self) -> bool:
        return self.answer is not None and self.answer["code"] == "0"

    @property
    def unanswered(self) -> bool:
        """Sent, and no final answer: the platform will cancel it (SERVICE_UNAVAILABLE alike)."""
        return self.sent and (self.answer is None or self.answer["code"] == "SERVICE_UNAVAILABLE")


async def start_server(data_dir: Path, log_path: Path) -> tuple[Server, int]:
    """`serve` with its settlement listener on a port free a moment ago (another if it was
    taken since); (the server, the settlement port)."""
    for _ in range(PORT_ATTEMPTS):
        port = unused_port()
        try:
            return await Server.start(data_dir, log_path, settlement_port=port), port
        except AssertionError:
            if os.strerror(errno.EADDRINUSE) not in log_path.read_text():
                raise
    raise AssertionError("no free port for the settlement listener")


def burst_items(rng: random.Random) -> tuple[list[Item], dict[str, dict[str, Any]]]:
    """Seeded adjustments over LOGINS, cancels of recent ones (racing them), and cancels of
    numbers never sent (tombstones); also the bodies of those never-sent adjustments."""
    items: list[Item] = []
    adjustments: list[Item] = []
    ghosts: dict[str, dict[str, Any]] = {}
    for i in range(BURST):
        login = rng.choice(LOGINS)
        roll = rng.random()
        if roll < 0.72 or not adjustments:
            kind = rng.choices(["OPEN_POSITION", "NORMAL_CLOSE", "ABNORMAL_OVERTRADING"], [6, 3, 1])
            cents = rng.randint(100, 8000 if kind[0] == "OPEN_POSITION" else 4000)
            sign = "-" if kind[0] == "ABNORMAL_OVERTRADING" else ""
            body = adjustment(login, f"{sign}{cents // 100}.{cents % 100:02d}", kind[0], orderId=i)
            adjustments.append(Item(ADJUST, body))
            items.append(adjustments[-1])
            continue
        if roll < 0.9:
            target = rng.choice(adjustments[-30:]).body
        else:
            target = adjustment(login, "5.00", orderId=i)
            ghosts[target["requestUniqueNo"]] = target
        items.append(Item(CANCEL, cancel_of(target)))
    return items, ghosts


def cancel_of(target: dict[str, Any]) -> dict[str, Any]:
    """A cancel of the adjustment `target` with a number of its own."""
    amount = target["amount"].lstrip("-")
    return cancellation(int(target["thirdServerCode"]), target["requestUniqueNo"], amount)


async def run_burst(
    platform: Platform, items: list[Item], kill_after: int, kill: Callable[[], None]
) -> None:
    """WINDOW workers send the items in order; after `kill_after` answers the server is killed
    and no more are sent. A request cut off by the kill keeps `answer = None`."""
    queue = deque(items)
    answered = 0
    killed = False

    async def worker() -> None:
        nonlocal answered, killed
        while queue and not killed:
            item = queue.popleft()
            item.sent = True
            try:
                item.answer = await platform.post(item.route, item.body)
            except aiohttp.ClientError:
                return  # the server went away with this one in flight
            answered += 1
            if answered >= kill_after and not killed:
                killed = True
                kill()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(WINDOW))), BURST_TIMEOUT_S)


async def bounded(jobs: Iterable[Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The jobs' results in order, at most PHASE_CONCURRENCY running at once."""
    gate = asyncio.Semaphore(PHASE_CONCURRENCY)

    async def one(job: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def read_journal(data_dir: Path) -> dict[str, JournalRow]:
    """The settlement journal's request rows straight from the ledger file, by number."""
    db = sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True)
    try:
        rows = [
            journal_row(raw)
            for raw in db.execute(f"SELECT {JOURNAL_COLUMNS} FROM settlement_journal")
        ]
    finally:
        db.close()
    assert {(row.company, row.space) for row in rows} <= {(COMPANY, REQUESTS)}
    return {row.number: row for row in rows}


@dataclass(frozen=True)
class Record:
    order: int
    login: int
    versions: tuple[int, ...]
    state: int  # of the latest version
    profit: Decimal  # as it was made


def settlement_records(data_dir: Path) -> dict[str, list[Record]]:
    """The finance records settlement made, by the request number their comment names."""
    db = sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT ord, version, login, state, profit, comment FROM records ORDER BY ord, version"
        ).fetchall()
    finally:
        db.close()
    by_order: dict[int, Record] = {}
    comments: dict[int, str] = {}
    for order, version, login, state, profit, comment in rows:
        seen = by_order.get(order)
        if seen is None:
            by_order[order] = Record(order, login, (version,), state, Decimal(profit))
            comments[order] = comment
        else:
            by_order[order] = Record(order, login, (*seen.versions, version), state, seen.profit)
    by_number: dict[str, list[Record]] = {}
    for order, record in by_order.items():
        if comments[order].startswith("settlement "):
            by_number.setdefault(comments[order].rsplit("#", 1)[1], []).append(record)
    return by_number


async def wallets(platform: Platform) -> dict[int, Decimal]:
    return {login: Decimal(await platform.wallet(login)) for login in LOGINS}


async def finance_count(admin: Client) -> int:
    count: int = (await admin.ok("MngGetTradesByFilter", {"limit": 1}))["count"]
    return count


def expected_cancel(target: JournalRow | None) -> tuple[str, int | None]:
    """A cancel's code and the order it reverses, from its target's journal row."""
    if target is None or target.kind == "tombstone":
        return "US_0000002", None
    if target.code != "0":
        return "US_0000001", None
    if target.cancelled_by is not None or target.finance_order is None:
        return "0", None
    return "0", target.finance_order


async def test_sigkill_mid_settlement_burst_keeps_answers_and_cancels_final(
    tmp_path: Path,
) -> None:
    """SIGKILL mid-burst, restart: every `0` is applied once and replays the same; cancels after
    the restart reverse once; tombstones survive; wallets equal the journal; the ledger verifies."""
    print(f"SETTLEMENT_KILL_SEED={KILL_SEED}")
    rng = random.Random(KILL_SEED)
    data_dir, log_path = tmp_path / "data", tmp_path / "server.log"
    clients: list[Client] = []
    server, port = await start_server(data_dir, log_path)
    try:
        token = await admin_token(data_dir)
        admin = await connect(server, token, clients)
        for login in LOGINS:
            await admin.ok("AddUser", {**DEMO_USER, "login": login})
            await admin.ok("CreditIn", {"login": login, "amount": float(FUNDED), "comment": "f"})
        items, ghosts = burst_items(rng)
        async with aiohttp.ClientSession() as http:
            platform = Platform(f"http://127.0.0.1:{port}/api", http)
            await run_burst(platform, items, rng.randint(*KILL_AFTER), server.proc.kill)
        assert await server.wait() == -signal.SIGKILL
        await server.stop()
        await close_all(clients)

        sent = [item for item in items if item.sent]
        adjustments = [item for item in sent if item.route == ADJUST]
        confirmed = [item for item in adjustments if item.confirmed]
        cancels = [item for item in sent if item.route == CANCEL]
        codes = Counter(item.answer["code"] if item.answer else None for item in sent)
        print(f"burst: {len(sent)} of {len(items)} sent before the kill; answers {dict(codes)}")
        assert len(sent) < len(items), "the kill came after the burst"
        assert codes[None] > 0, "nothing was in flight at the kill"
        assert confirmed and codes["INSUFFICIENT_FUNDS"] and codes["US_0000002"]

        # -- the files as the kill left them --------------------------------------------------
        at_kill = read_journal(data_dir)
        records = settlement_records(data_dir)
        assert all(len(found) == 1 for found in records.values()), "a number applied twice"
        for item in confirmed:
            answered, row = data(item), at_kill.get(item.number)
            assert row is not None, f"{item.number} answered 0, not in the journal after the kill"
            assert (row.kind, row.code, row.finance_order) == ("adjustment", "0", answered["order"])
            assert Decimal(row.amount) == Decimal(answered["amount"])
            if answered["order"] is not None:
                (record,) = records[item.number]
                assert (record.order, record.profit) == (
                    answered["order"],
                    Decimal(answered["amount"]),
                )
        tombstoned_before_kill = [
            item.body["reverseRequestUniqueNo"]
            for item in cancels
            if item.answer is not None and item.answer["code"] == "US_0000002"
        ]
        for number in tombstoned_before_kill:
            assert at_kill[number].kind == "tombstone", number

        # -- restart: what the platform does next -------------------------------------------
        server, port = await start_server(data_dir, log_path)
        admin = await connect(server, token, clients)
        for login in LOGINS:
            await admin.ok("CreditIn", {"login": login, "amount": float(TOPPED_UP), "comment": "t"})
        async with aiohttp.ClientSession() as http:
            platform = Platform(f"http://127.0.0.1:{port}/api", http)
            cancelled = await after_restart(
                platform, admin, rng, items, ghosts, at_kill, tombstoned_before_kill
            )

            # Each wallet: its start plus what its confirmed, uncancelled adjustments moved
            # (the platform's view), which is also the journal's net movement (the ledger's).
            journal = read_journal(data_dir)
            platform_net = dict.fromkeys(LOGINS, Decimal(0))
            for item in confirmed:
                if item.number not in cancelled:
                    login = int(item.body["thirdServerCode"])
                    platform_net[login] += Decimal(data(item)["amount"])
            journal_net = dict.fromkeys(LOGINS, Decimal(0))
            for row in journal.values():
                if row.code == "0" and row.login is not None:
                    journal_net[row.login] += Decimal(row.amount)
            final = await wallets(platform)
            assert final == {login: FUNDED + TOPPED_UP + platform_net[login] for login in LOGINS}
            assert final == {login: FUNDED + TOPPED_UP + journal_net[login] for login in LOGINS}

        records = settlement_records(data_dir)
        assert all(len(found) == 1 for found in records.values()), "a number applied twice"
        for number, (record,) in records.items():
            reversed_ = journal[number].cancelled_by is not None
            assert record.versions == ((1, 2) if reversed_ else (1,)), (number, record)
            assert (record.state == 6) is reversed_, (number, record)
        await close_all(clients)
        server.proc.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
        await assert_ledger_verifies(data_dir)
    except Exception as exc:
        exc.add_note(f"SETTLEMENT_KILL_SEED={KILL_SEED} reproduces this run")
        raise
    finally:
        await close_all(clients)
        await server.stop()


async def after_restart(
    platform: Platform,
    admin: Client,
    rng: random.Random,
    items: list[Item],
    ghosts: dict[str, dict[str, Any]],
    at_kill: dict[str, JournalRow],
    tombstoned_before_kill: list[str],
) -> set[str]:
    """Replays, cancels, second cancels and late adjustments, each phase checked; the numbers of
    the adjustments a cancel answered `0` for (reversed, or nothing to reverse)."""
    bodies = {item.number: item.body for item in items if item.route == ADJUST} | ghosts
    sent = [item for item in items if item.sent]
    confirmed = [item for item in sent if item.route == ADJUST and item.confirmed]
    cancelled: set[str] = set()
    tombstoned = set(tombstoned_before_kill)

    def note(target: str, answer: dict[str, Any]) -> None:
        if answer["code"] == "0":
            cancelled.add(target)
        elif answer["code"] == "US_0000002":
            tombstoned.add(target)

    for item in sent:
        if item.route == CANCEL and item.answer is not None:
            note(item.body["reverseRequestUniqueNo"], item.answer)

    async def unmoved(phase: Callable[[], Awaitable[None]]) -> None:
        before = (await wallets(platform), await finance_count(admin))
        await phase()
        assert (await wallets(platform), await finance_count(admin)) == before

    async def replay_confirmed() -> None:
        answers = await bounded(platform.adjust(item.body) for item in confirmed)
        for item, answer in zip(confirmed, answers, strict=True):
            assert (answer["code"], answer["data"]) == ("0", data(item)), item.number

    await unmoved(replay_confirmed)

    # The platform cancels every adjustment that failed or got no answer: whatever had happened
    # to it, the cancel reverses it or blocks it, as the journal at the kill says.
    failed = [item for item in sent if item.route == ADJUST and not item.confirmed]
    answers = await bounded(platform.cancel(cancel_of(item.body)) for item in failed)
    for item, answer in zip(failed, answers, strict=True):
        code, order = expected_cancel(at_kill.get(item.number))
        assert answer["code"] == code, (item.number, at_kill.get(item.number), answer)
        assert answer["data"].get("order") == order, (item.number, answer)
        if order is not None:
            assert Decimal(answer["data"]["amount"]) == -Decimal(at_kill[item.number].amount)
        note(item.number, answer)
    assert any(item.unanswered for item in failed)
    outcomes = Counter(
        (answer["code"], answer["data"].get("order") is not None)
        for item, answer in zip(failed, answers, strict=True)
        if item.unanswered
    )
    print(f"cancels of unanswered adjustments (code, reversed a record): {dict(outcomes)}")

    # Its cancels that got no final answer are resent, as the platform retries them: final now,
    # and the same as before the kill where the cancel had been decided.
    lost = [item for item in sent if item.route == CANCEL and not is_final(item.answer)]
    answers = await bounded(platform.cancel(item.body) for item in lost)
    for item, answer in zip(lost, answers, strict=True):
        assert is_final(answer), (item.number, answer)
        if item.number in at_kill:
            assert answer["code"] == at_kill[item.number].code, (item.number, answer)
        note(item.body["reverseRequestUniqueNo"], answer)

    # A seeded third of the confirmed adjustments is cancelled: reversed once, or found done.
    chosen = [item for item in confirmed if rng.randrange(CONFIRMED_CANCELLED) == 0]
    assert chosen
    answers = await bounded(platform.cancel(cancel_of(item.body)) for item in chosen)
    for item, answer in zip(chosen, answers, strict=True):
        if item.number in cancelled or data(item)["order"] is None:
            assert (answer["code"], answer["data"]) == ("0", {}), (item.number, answer)
        else:
            assert answer["code"] == "0", (item.number, answer)
            assert answer["data"]["order"] == data(item)["order"]
            assert Decimal(answer["data"]["amount"]) == -Decimal(data(item)["amount"])
        note(item.number, answer)

    # A second cancel (another number for the same adjustment, and each confirmed cancel resent)
    # moves nothing.
    async def cancel_again() -> None:
        targets = sorted(cancelled)
        again = await bounded(platform.cancel(cancel_of(bodies[number])) for number in targets)
        assert all((a["code"], a["data"]) == ("0", {}) for a in again), again
        resent = [item for item in sent if item.route == CANCEL and item.confirmed]
        answers = await bounded(platform.cancel(item.body) for item in resent)
        for item, answer in zip(resent, answers, strict=True):
            assert (answer["code"], answer["data"]) == ("0", data(item)), item.number

    await unmoved(cancel_again)

    # Tombstones, those made before the kill included, block the late adjustment for good.
    async def late() -> None:
        targets = sorted(tombstoned)
        answers = await bounded(platform.adjust(bodies[number]) for number in targets)
        assert [a["code"] for a in answers] == ["REQUEST_CANCELLED"] * len(targets), answers

    await unmoved(late)
    await unmoved(replay_confirmed)  # a cancelled adjustment replays its answer, never reapplies
    return cancelled


def data(item: Item) -> dict[str, Any]:
    """The `data` of the answer `item` got."""
    assert item.answer is not None
    answer: dict[str, Any] = item.answer["data"]
    return answer


def is_final(answer: dict[str, Any] | None) -> bool:
    """Is this a cancel's final answer (the platform stops retrying)?"""
    return answer is not None and answer["code"] in ("0", "US_0000001", "US_0000002")
