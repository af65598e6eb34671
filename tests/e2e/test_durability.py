"""The real server process killed or stopped under load: answered work survives, retries are safe.

These tests run `manager-gateway serve` as a subprocess with its default settings (ledger
`synchronous=FULL`), learn its port from the line it prints once listening, and drive it with
several pipelined connections.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sqlite3
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.runtime.records import Cmd

from ..conftest import DEMO_USER, Client, poll_rounds

pytestmark = pytest.mark.slow

CLI = (sys.executable, "-m", "manager_gateway.cli")
LISTENING = re.compile(rb"^manager-gateway listening on 127\.0\.0\.1:(\d+)\r?\n$")
SETTLEMENT_LISTENING = re.compile(
    rb"^manager-gateway settlement listening on 127\.0\.0\.1:(\d+)\r?\n$"
)
START_TIMEOUT_S = 20
EXIT_TIMEOUT_S = 20
BURST_TIMEOUT_S = 60
LOGINS = tuple(range(9001, 9011))
CONNECTIONS = 4
WINDOW = 16  # requests each connection keeps in flight
PER_CONNECTION = 250
TRIGGER_AFTER = 300  # answers received before the server is killed or stopped
KILL_ROUNDS = 4  # SIGKILLs on the same data dir, each followed by a restart
KILL_NEW_PER_ROUND = 240  # fresh operations queued per round (most are cut off by the kill)
KILL_RETRIES_PER_ROUND = 60  # earlier extIDs resent per round, answered or lost alike
#: Fixed, so every run kills at the same points; KILL_SEED=<n> in the environment tries others.
DEFAULT_KILL_SEED = 20261201
KILL_AFTER = (20, 200)  # bounds of the (seeded) number of answers before the kill
KILL_MAX_CENTS = 100_000  # one operation moves at most 1,000.00 ...
SEED_AMOUNT = 1_000_000.0  # ... so debits never meet NOT_ENOUGH_MONEY on a seeded account
FINANCE_CMDS = {
    "BalanceIn": Cmd.BALANCE_IN,
    "CreditIn": Cmd.CREDIT_IN,
    "BalanceOut": Cmd.BALANCE_OUT,
    "CreditOut": Cmd.CREDIT_OUT,
}


@dataclass(frozen=True)
class Request:
    command: str
    data: dict[str, Any]
    ext_id: str

    @property
    def is_credit(self) -> bool:
        return self.command.startswith("Credit")

    @property
    def cmd(self) -> Cmd:
        return FINANCE_CMDS[self.command.removesuffix("Sync")]


class Server:
    """One `manager-gateway serve` process; its log goes to a file, its stdout gives the port."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: BinaryIO) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.settlement_port = 0

    @classmethod
    async def start(
        cls,
        data_dir: Path,
        log_path: Path,
        settings: dict[str, str] | None = None,
        settlement_port: int = 0,
    ) -> Server:
        """`serve` in a subprocess; `settings` become GATEWAY_* environment variables. The
        settlement listener is off unless `settlement_port` is given (it then reads the second
        line too)."""
        log = log_path.open("ab")
        env = {**os.environ, **{f"GATEWAY_{k.upper()}": v for k, v in (settings or {}).items()}}
        try:
            proc = await asyncio.create_subprocess_exec(
                *CLI,
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                "0",
                "--settlement-port",
                str(settlement_port),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=data_dir.parent,
                env=env,
            )
        except BaseException:
            log.close()
            raise
        server = cls(proc, 0, log)
        server.settlement_port = settlement_port
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
            match = LISTENING.match(line)
            assert match, f"unexpected first line {line!r}; log:\n{log_path.read_text()}"
            server.port = int(match.group(1))
            if settlement_port:
                line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
                assert SETTLEMENT_LISTENING.match(line), f"unexpected second line {line!r}"
        except BaseException:
            await server.stop()
            raise
        return server

    async def wait(self) -> int:
        """The exit status, within a bound."""
        return await asyncio.wait_for(self.proc.wait(), EXIT_TIMEOUT_S)

    async def stop(self) -> None:
        """Kill if still running, reap, close the log (idempotent; for `finally`)."""
        try:
            if self.proc.returncode is None:
                self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), EXIT_TIMEOUT_S)
        finally:
            self.log.close()


async def cli(*args: str | Path) -> tuple[int, str]:
    """Run a `manager-gateway` subcommand to completion (bounded): (exit status, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), EXIT_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def assert_ledger_verifies(data_dir: Path) -> str:
    """`manager-gateway ledger verify` on `data_dir` exits 0; its output."""
    status, out = await cli("ledger", "verify", "--data-dir", data_dir)
    assert status == 0, out
    return out


async def admin_token(data_dir: Path) -> str:
    status, out = await cli("token", "--data-dir", data_dir, "--login", "1", "--role", "admin")
    assert status == 0, out
    return out.strip().splitlines()[-1]


async def connect(server: Server, token: str, clients: list[Client]) -> Client:
    """A client that only wants its own answers (no pushed events); closed by the test."""
    client = await Client.connect(server.port, token)
    clients.append(client)
    await client.ok("Unsubscribe", {"chanels": ["trade:event", "balance:event"]})
    return client


async def connect_many(server: Server, token: str, clients: list[Client]) -> list[Client]:
    """CONNECTIONS authenticated clients of `server`."""
    return [await connect(server, token, clients) for _ in range(CONNECTIONS)]


async def close_all(clients: list[Client]) -> None:
    for client in clients:
        await client.close()
    clients.clear()


def burst_requests(tag: str) -> list[deque[Request]]:
    """Per connection, a queue of distinct credits and deposits spread over the accounts."""
    queues = []
    for conn in range(CONNECTIONS):
        queue: deque[Request] = deque()
        for i in range(PER_CONNECTION):
            n = conn * PER_CONNECTION + i
            data = {
                "login": LOGINS[n % len(LOGINS)],
                "amount": float(Decimal(n + 1) / 100 + 1),
                "comment": f"{tag} {conn}/{i}",
            }
            command = "CreditInSync" if n % 2 else "BalanceInSync"
            queue.append(Request(command, data, f"{tag}-{conn}-{i}"))
        queues.append(queue)
    return queues


class Burst:
    """Pipelined traffic: each connection keeps WINDOW requests in flight; after `trigger_after`
    answers `trigger` runs (a signal), and sending stops unless `send_after_trigger`."""

    def __init__(
        self, trigger_after: int, trigger: Callable[[], None], send_after_trigger: bool = False
    ) -> None:
        self.sent: list[Request] = []
        self.sent_before_trigger: list[Request] = []
        self.answers: dict[str, dict[str, Any]] = {}
        self.futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.triggered = False
        self._trigger_after, self._trigger = trigger_after, trigger
        self._send_after_trigger = send_after_trigger

    @property
    def stopped(self) -> bool:
        return self.triggered and not self._send_after_trigger

    async def run(self, clients: list[Client], queues: list[deque[Request]]) -> None:
        workers = [
            self._worker(client, queue)
            for client, queue in zip(clients, queues, strict=True)
            for _ in range(WINDOW)
        ]
        await asyncio.wait_for(asyncio.gather(*workers), BURST_TIMEOUT_S)

    async def _worker(self, client: Client, queue: deque[Request]) -> None:
        closed: asyncio.Future[Any] = asyncio.ensure_future(client.closed.wait())
        try:
            while queue and not self.stopped and not client.closed.is_set():
                request = queue.popleft()
                future = client.send(request.command, request.data, ext_id=request.ext_id)
                self.sent.append(request)
                self.futures[request.ext_id] = future
                await asyncio.wait([future, closed], return_when=asyncio.FIRST_COMPLETED)
                if not future.done():
                    return  # the server went away with this request unanswered
                self.answers[request.ext_id] = future.result()
                if len(self.answers) >= self._trigger_after and not self.triggered:
                    self.triggered = True
                    self.sent_before_trigger = list(self.sent)
                    self._trigger()
        finally:
            closed.cancel()


def ledger_rows(data_dir: Path) -> dict[int, tuple[int, int, str, str]]:
    """Current (latest version) records straight from the ledger: order -> (login, cmd, ...)."""
    db = sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT ord, login, cmd, profit, comment FROM records r WHERE version ="
            " (SELECT MAX(version) FROM records WHERE ord = r.ord)"
        ).fetchall()
    finally:
        db.close()
    return {order: (login, cmd, profit, comment) for order, login, cmd, profit, comment in rows}


async def create_accounts(admin: Client) -> None:
    for login in LOGINS:
        await admin.ok("AddUser", {**DEMO_USER, "login": login}, ext_id=f"add-{login}")


async def test_sigkill_mid_burst_keeps_every_answered_operation(tmp_path: Path) -> None:
    """SIGKILL mid-burst, restart: answered work is there once; retries apply nothing twice."""
    data_dir, log_path = tmp_path / "data", tmp_path / "server.log"
    clients: list[Client] = []
    server = await Server.start(data_dir, log_path)
    try:
        token = await admin_token(data_dir)
        await create_accounts(await connect(server, token, clients))
        conns = await connect_many(server, token, clients)
        burst = Burst(TRIGGER_AFTER, server.proc.kill)
        await burst.run(conns, burst_requests("kill"))
        assert await server.wait() == -signal.SIGKILL
        await server.stop()
        await close_all(clients)

        answered = burst.answers
        assert all(answer["status"] == 200 for answer in answered.values()), answered
        # Killed mid-burst: some answers in, most of the burst never sent.
        assert TRIGGER_AFTER <= len(answered) <= len(burst.sent) < CONNECTIONS * PER_CONNECTION

        server = await Server.start(data_dir, log_path)
        admin = await connect(server, token, clients)
        for ext_id, answer in answered.items():
            found = await admin.ok("GetTradeByOrder", {"order": answer["data"]["order"]})
            assert found == answer["data"], ext_id
        listed = await admin.ok("MngGetTradesByFilter", {"limit": 50_000})
        before = {row["order"]: row for row in listed["rows"]}
        assert listed["count"] == len(before)
        assert {a["data"]["order"] for a in answered.values()} <= before.keys()
        assert len(before) <= len(burst.sent)

        # Every request of the burst again, same extIDs, pipelined over fresh connections.
        retry_conns = await connect_many(server, token, clients)
        retries = [
            retry_conns[n % CONNECTIONS].send(r.command, r.data, ext_id=r.ext_id)
            for n, r in enumerate(burst.sent)
        ]
        retried = await asyncio.wait_for(asyncio.gather(*retries), BURST_TIMEOUT_S)
        orders = set()
        for request, answer in zip(burst.sent, retried, strict=True):
            assert answer["status"] == 200, answer
            record = answer["data"]
            assert (record["login"], record["profit"], record["comment"]) == (
                request.data["login"],
                request.data["amount"],
                request.data["comment"],
            )
            if request.ext_id in answered:
                assert record == answered[request.ext_id]["data"]
            if record["order"] in before:
                assert record == before[record["order"]]
            orders.add(record["order"])
        assert len(orders) == len(burst.sent)
        assert before.keys() <= orders
        listed = await admin.ok("MngGetTradesByFilter", {"limit": 1})
        assert listed["count"] == len(burst.sent)

        want = {login: [Decimal(0), Decimal(0)] for login in LOGINS}
        for request in burst.sent:
            want[request.data["login"]][request.is_credit] += Decimal(str(request.data["amount"]))
        rows = (await admin.ok("GetUserBalanceList", {"logins": list(LOGINS)}))["rows"]
        assert {row["login"]: (row["balance"], row["credit"]) for row in rows} == {
            login: (float(balance), float(credit)) for login, (balance, credit) in want.items()
        }

        await close_all(clients)
        server.proc.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
        assert f"orders={len(burst.sent)} " in await assert_ledger_verifies(data_dir)
    finally:
        await close_all(clients)
        await server.stop()


def random_operations(rng: random.Random, tag: str, count: int) -> list[Request]:
    """Credits, deposits and their debits, async and Sync, over the accounts; comment = extID."""
    operations = []
    for i in range(count):
        name = rng.choice(tuple(FINANCE_CMDS))
        amount = float(Decimal(rng.randint(1, KILL_MAX_CENTS)) / 100)
        ext_id = f"{tag}-{i}"
        data = {
            "login": rng.choice(LOGINS),
            "amount": -amount if name.endswith("Out") else amount,
            "comment": ext_id,
        }
        operations.append(Request(name + rng.choice(("", "Sync")), data, ext_id))
    return operations


def deal(rng: random.Random, requests: list[Request]) -> list[deque[Request]]:
    """The requests shuffled and dealt over the connections."""
    requests = rng.sample(requests, len(requests))
    return [deque(requests[conn::CONNECTIONS]) for conn in range(CONNECTIONS)]


def applied_operations(data_dir: Path, sent: dict[str, Request]) -> dict[str, int]:
    """extID -> order of every operation in the ledger, checking each was sent, with its own
    login, kind and amount, and is there once."""
    applied: dict[str, int] = {}
    for order, (login, cmd, profit, comment) in ledger_rows(data_dir).items():
        assert comment in sent, f"order {order}: {comment!r} was never sent"
        assert comment not in applied, f"{comment} applied twice: {applied[comment]}, {order}"
        request = sent[comment]
        assert (login, cmd, Decimal(profit)) == (
            request.data["login"],
            request.cmd,
            Decimal(str(request.data["amount"])),
        ), comment
        applied[comment] = order
    return applied


async def check_balances(admin: Client, sent: dict[str, Request], applied: dict[str, int]) -> None:
    """Each account's balance and credit are the sums of its applied records."""
    want = {login: [Decimal(0), Decimal(0)] for login in LOGINS}
    for ext_id in applied:
        request = sent[ext_id]
        want[request.data["login"]][request.is_credit] += Decimal(str(request.data["amount"]))
    for login, (balance, credit) in want.items():
        account = await admin.ok("GetAccountByLogin", {"login": login})
        got = (Decimal(str(account["balance"])), Decimal(str(account["credit"])))
        assert got == (balance, credit), login


def record_answers(
    answers: dict[str, dict[str, Any]],
    sent: dict[str, Request],
    outcomes: dict[str, dict[str, Any]],
    applied: dict[str, int],
) -> None:
    """Check answers against the requests and against what came before, then keep them.

    `outcomes` holds the first 200 answer per extID: a retry must get it again. `applied` is the
    ledger as found before this round: a retry whose earlier attempt went unanswered but was
    committed must answer that order."""
    for ext_id, answer in answers.items():
        assert answer["status"] == 200, answer
        data, request = answer["data"], sent[ext_id]
        amount = data["profit"] if request.command.endswith("Sync") else data["amount"]
        assert (data["login"], data["cmd"], amount) == (
            request.data["login"],
            request.cmd,
            request.data["amount"],
        ), ext_id
        if ext_id in outcomes:
            assert data == outcomes[ext_id], f"{ext_id}: retry changed the outcome"
        elif ext_id in applied:
            assert data["order"] == applied[ext_id], f"{ext_id}: lost answer, retry re-applied"
        outcomes[ext_id] = data


async def test_repeated_sigkill_under_load_loses_nothing_answered(tmp_path: Path) -> None:
    """Seeded rounds of load, SIGKILL after a random number of answers, restart on the same data:
    the ledger verifies, answered work is there once, retries get their original outcome."""
    seed = int(os.environ.get("KILL_SEED", DEFAULT_KILL_SEED))
    print(f"KILL_SEED={seed}")  # shown with -s, and in the report when the test fails
    rng = random.Random(seed)
    data_dir, log_path = tmp_path / "data", tmp_path / "server.log"
    clients: list[Client] = []
    sent: dict[str, Request] = {}  # every request ever sent, by extID
    outcomes: dict[str, dict[str, Any]] = {}  # the first 200 answer of each extID
    applied: dict[str, int] = {}  # the ledger after the last kill: extID -> order
    server = await Server.start(data_dir, log_path)
    try:
        token = await admin_token(data_dir)
        admin = await connect(server, token, clients)
        await create_accounts(admin)
        for login in LOGINS:  # seeded accounts: the debits below cannot be refused
            for name in ("BalanceIn", "CreditIn"):
                data = {"login": login, "amount": SEED_AMOUNT, "comment": f"seed-{name}-{login}"}
                seed_request = sent[data["comment"]] = Request(name, data, data["comment"])
                answer = await admin.request(name, data, ext_id=seed_request.ext_id)
                record_answers({seed_request.ext_id: answer}, sent, outcomes, applied)

        for round_ in range(KILL_ROUNDS):
            if round_:
                server = await Server.start(data_dir, log_path)
                admin = await connect(server, token, clients)
                await check_balances(admin, sent, applied)
            earlier = list(sent.values())
            lost = [r for r in earlier if r.ext_id not in outcomes]
            retries = rng.sample(lost, min(len(lost), KILL_RETRIES_PER_ROUND // 2))
            retries += rng.sample(earlier, min(len(earlier), KILL_RETRIES_PER_ROUND - len(retries)))
            retries = list({r.ext_id: r for r in retries}.values())  # one attempt per round
            fresh = random_operations(rng, f"r{round_}", KILL_NEW_PER_ROUND)
            conns = await connect_many(server, token, clients)
            burst = Burst(rng.randint(*KILL_AFTER), server.proc.kill)
            await burst.run(conns, deal(rng, fresh + retries))
            assert await server.wait() == -signal.SIGKILL
            await server.stop()
            await close_all(clients)

            sent.update((r.ext_id, r) for r in burst.sent)
            record_answers(burst.answers, sent, outcomes, applied)
            await assert_ledger_verifies(data_dir)
            applied = applied_operations(data_dir, sent)
            for ext_id, data in outcomes.items():
                assert applied.get(ext_id) == data["order"], f"{ext_id}: answered, not in ledger"

        # Last restart: every extID ever sent again; lost ones are applied now or found applied.
        server = await Server.start(data_dir, log_path)
        admin = await connect(server, token, clients)
        await check_balances(admin, sent, applied)
        conns = await connect_many(server, token, clients)
        everything = list(sent.values())
        retried = await asyncio.wait_for(
            asyncio.gather(
                *(
                    conns[n % CONNECTIONS].send(r.command, r.data, ext_id=r.ext_id)
                    for n, r in enumerate(everything)
                )
            ),
            BURST_TIMEOUT_S,
        )
        record_answers(
            {r.ext_id: a for r, a in zip(everything, retried, strict=True)}, sent, outcomes, applied
        )
        await close_all(clients)
        server.proc.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
        await server.stop()
        await assert_ledger_verifies(data_dir)
        applied = applied_operations(data_dir, sent)
        assert applied == {ext_id: data["order"] for ext_id, data in outcomes.items()}
        assert applied.keys() == sent.keys()

        server = await Server.start(data_dir, log_path)
        await check_balances(await connect(server, token, clients), sent, applied)
    except Exception as exc:
        exc.add_note(f"KILL_SEED={seed} reproduces this run")
        raise
    finally:
        await close_all(clients)
        await server.stop()


def hold_write_lock(data_dir: Path) -> sqlite3.Connection:
    """Take the ledger's write lock from another process's connection, as a backup would: the
    gateway's commits wait for it (up to its busy timeout). ROLLBACK and close to let go."""
    holder = sqlite3.connect(data_dir / LEDGER_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


async def assert_refused(port: int) -> None:
    """A new connection to `port` is refused, or closed unanswered if the kernel took it in."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return
    try:
        writer.write(b'{"command":"HealthCheck","extID":"refused","data":{}}\r\n')
        assert await asyncio.wait_for(reader.read(), EXIT_TIMEOUT_S) == b"", "accepted"
    except ConnectionResetError:
        pass
    finally:
        writer.close()


async def test_sigterm_under_load_answers_everything_and_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM mid-burst, the drain held open by a write lock the test takes on the ledger: while
    it drains, requests (HealthCheck included) are answered 503 SHUTTING_DOWN and a new
    connection is refused; once the lock goes, the write the lock held is committed and
    answered 200, exit 0, every request sent got 200 or 503, the 200s are in the ledger and the
    503s are not."""
    data_dir, log_path = tmp_path / "data", tmp_path / "server.log"
    clients: list[Client] = []
    # A long busy timeout: the commits in flight wait for the test's lock instead of failing.
    server = await Server.start(data_dir, log_path, {"ledger_busy_timeout_ms": "60000"})
    holder = None
    try:
        token = await admin_token(data_dir)
        await create_accounts(await connect(server, token, clients))
        probe = await connect(server, token, clients)
        conns = await connect_many(server, token, clients)
        triggered = asyncio.Event()
        burst = Burst(TRIGGER_AFTER, triggered.set, send_after_trigger=True)
        running = asyncio.create_task(burst.run(conns, burst_requests("term")))
        await asyncio.wait_for(triggered.wait(), BURST_TIMEOUT_S)
        holder = hold_write_lock(data_dir)  # from here on nothing commits
        # The burst may have been answered in full while this test took the lock, so a write of
        # its own is what holds the drain open: sent now, it cannot commit; the HealthCheck
        # answered behind it on the same connection shows the server has received it.
        held_data = {"login": LOGINS[0], "amount": 2.0, "comment": "held"}
        held = probe.send("CreditIn", held_data, ext_id="term-held")
        assert (await probe.request("HealthCheck"))["status"] == 200
        server.proc.send_signal(signal.SIGTERM)
        # HealthCheck round trips until the signal is handled: 200 before, 503 once draining.
        for _ in poll_rounds():
            health = await probe.request("HealthCheck", ext_id=probe.next_ext_id())
            if health["status"] != 200:
                break
        assert (health["status"], health.get("error")) == (503, "SHUTTING_DOWN"), health
        late_data = {"login": LOGINS[0], "amount": 1.0, "comment": "late"}
        late = await probe.request("CreditIn", late_data, ext_id="term-late")
        assert (late["extID"], late["status"], late["error"]) == (
            "term-late",
            503,
            "SHUTTING_DOWN",
        )
        await assert_refused(server.port)
        holder.execute("ROLLBACK")
        holder.close()
        holder = None
        await running
        held_answer = await asyncio.wait_for(held, EXIT_TIMEOUT_S)
        assert held_answer["status"] == 200, held_answer
        assert await server.wait() == 0
        for client in conns:
            await asyncio.wait_for(client.closed.wait(), EXIT_TIMEOUT_S)

        # Requests sent before the signal must all be answered; later ones may meet a closed
        # connection, but whatever answer they got must be one of the same two.
        unanswered = [
            r.ext_id for r in burst.sent_before_trigger if not burst.futures[r.ext_id].done()
        ]
        assert unanswered == []
        outcomes = {
            r.ext_id: burst.futures[r.ext_id].result()
            for r in burst.sent
            if burst.futures[r.ext_id].done()
        }
        kinds = {(a["status"], a.get("error")) for a in outcomes.values()}
        assert kinds <= {(200, None), (503, "SHUTTING_DOWN")}, kinds
        applied = {ext_id: a["data"] for ext_id, a in outcomes.items() if a["status"] == 200}
        assert len(applied) >= TRIGGER_AFTER

        rows = ledger_rows(data_dir)
        by_ext_id = {r.ext_id: r for r in burst.sent}
        for ext_id, record in applied.items():
            request = by_ext_id[ext_id]
            assert rows[record["order"]] == (
                request.data["login"],
                7 if request.is_credit else 6,
                f"{Decimal(str(request.data['amount'])):.2f}",
                request.data["comment"],
            )
        # Nothing applied twice, nothing applied that was refused with 503.
        comments = [comment for _, _, _, comment in rows.values()]
        assert "late" not in comments
        assert comments.count("held") == 1
        assert rows[held_answer["data"]["order"]] == (LOGINS[0], 7, "2.00", "held")
        by_comment = {r.data["comment"]: r.ext_id for r in burst.sent}
        applied_ext_ids = [by_comment[comment] for comment in comments if comment != "held"]
        assert sorted(applied_ext_ids) == sorted(set(applied_ext_ids))
        refused = {ext_id for ext_id, a in outcomes.items() if a["status"] == 503}
        assert refused.isdisjoint(applied_ext_ids)
        await close_all(clients)
        await assert_ledger_verifies(data_dir)
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
        await close_all(clients)
        await server.stop()


async def test_sigterm_while_the_ledger_hangs_exits_within_the_bound(tmp_path: Path) -> None:
    """SIGTERM while a commit hangs (another process holds the ledger's write lock and the busy
    timeout is long): the request in flight is answered 503 and the gateway exits 1 once
    shutdown_timeout_s has passed, instead of waiting for the disk. Nothing of the hung batch is
    in the ledger, and after a restart a retry under the same extID is applied once."""
    data_dir, log_path = tmp_path / "data", tmp_path / "server.log"
    clients: list[Client] = []
    hang = {"ledger_busy_timeout_ms": "600000", "shutdown_timeout_s": "1"}
    server = await Server.start(data_dir, log_path, hang)
    holder = None
    data = {"login": LOGINS[0], "amount": 25.0, "comment": "hung"}
    try:
        token = await admin_token(data_dir)
        client = await connect(server, token, clients)
        await client.ok("AddUser", {**DEMO_USER, "login": LOGINS[0]})
        holder = sqlite3.connect(data_dir / LEDGER_FILE, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        pending = client.send("CreditIn", data, ext_id="hung-1")
        # Frames are handled in order and the main loop takes the credit (and starts its commit,
        # which now waits for the lock) before this answer is written.
        await client.ok("HealthCheck")
        server.proc.send_signal(signal.SIGTERM)
        assert await server.wait() == 1
        answer = await asyncio.wait_for(pending, EXIT_TIMEOUT_S)
        assert (answer["status"], answer["error"]) == (503, "SHUTTING_DOWN")
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
        await close_all(clients)
        await server.stop()
    assert ledger_rows(data_dir) == {}

    clients = []
    server = await Server.start(data_dir, log_path)
    try:
        client = await connect(server, token, clients)
        retried = await client.ok("CreditIn", data, ext_id="hung-1")
        assert retried["amount"] == 25.0
        account = await client.ok("GetAccountByLogin", {"login": LOGINS[0]})
        assert account["credit"] == 25.0
        await close_all(clients)
        await assert_ledger_verifies(data_dir)
    finally:
        await close_all(clients)
        await server.stop()
