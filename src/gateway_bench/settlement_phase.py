"""The bench's settlement phases: the platform simulator against the gateway's HTTP listener.

Both run against a gateway of their own, with durable commits and the settlement listener on,
over `accounts` wallets created and funded over TCP (AddUser, then `CreditInSync` of `credit`:
the wallet is the credit field by default, and a large one keeps `INSUFFICIENT_FUNDS` out of the
figures). The logins are the load generator's, so a `CreditInSync` run can use them too.

`settlement`: first short reference runs on the same gateway and wallets (`settlement_cost`:
CreditInSync and an account read over TCP, the same read over HTTP, each as many in flight),
then the simulator closed loop with `concurrency` adjustments in flight, 70 % OPEN_POSITION /
25 % NORMAL_CLOSE / 5 % ABNORMAL_OVERTRADING. The gateway's CPU seconds per request in each tell
what serving a request over HTTP costs against the TCP protocol. The account creation is outside
all of them: its scrypt hashing would swamp them.

`settlement-fault`: the simulator again, and half-way through this process holds SQLite's write
lock on the ledger (`pending.LedgerLock`) for `hold_s`. The gateway's commit waits for it
(`ledger_busy_timeout_ms` outlasts the hold), so nothing is decided while it is held: every
request must still be answered within `settlement_answer_budget_ms` + `slack_ms`
(`SERVICE_UNAVAILABLE` at the budget), the simulator's cancels must settle every one of those,
and every wallet must still hold what its confirmed adjustments imply. Answer times are judged
as the gateway reports them in each envelope (`tm`); the simulator's own clock, which adds its
HTTP client's queueing on a loaded machine, is reported beside them.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .loadgen import LoadSpec
from .monitor import scrape_metrics
from .pending import LedgerLock
from .sessions import (
    ScenarioError,
    bind_sessions,
    close_clients,
    create_accounts,
    expect_ok,
    open_clients,
)
from .settlement.simresult import SimulationResult
from .settlement.simspec import DEFAULT_MIX, SimulationSpec
from .settlement.simulator import run_simulation
from .settlement_cost import ReadCpu, compare, cpu_figures, reference_runs

SETTLEMENT_READY = re.compile(rb"manager-gateway settlement listening on (\S+):(\d+)")
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
PAST_BUDGET = "gateway_settlement_past_budget_total"
FIRST_LOGIN = LoadSpec.first_login  # the load generator's logins: the reference run uses them
FUNDING_CONNECTIONS = 10


@dataclass
class SettlementSpec:
    """The `settlement` phase: throughput, latency and CPU per request at `concurrency`."""

    accounts: int = 100
    concurrency: int = 50  # platform requests in flight (closed loop)
    duration_s: float = 60.0  # measured, like the CreditInSync 50x4 run
    warmup_s: float = 10.0
    reference_s: float = 3.0  # each reference run of settlement_cost (0: none)
    credit: float = 1_000_000.0  # each wallet's funding
    currency: str = "USD"
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 1

    @property
    def logins(self) -> range:
        return range(FIRST_LOGIN, FIRST_LOGIN + self.accounts)


@dataclass
class FaultSpec:
    """The `settlement-fault` phase: the ledger locked for `hold_s` in the middle of the run."""

    accounts: int = 100
    # Lighter than the throughput phase: the answers' timing is the point, and the simulator's
    # own queueing is in every latency it measures; a request it cannot even send within the
    # platform's 3 s counts as unanswered.
    concurrency: int = 5
    duration_s: float = 20.0
    hold_s: float = 4.0
    answer_budget_ms: int = 2500  # the gateway's settlement_answer_budget_ms (its default)
    slack_ms: int = 100  # an answer the gateway took longer than budget + slack for is late
    # The gateway's: how long its stalled commit waits for the lock. It must outlast the hold, or
    # the commit fails and its requests are refused instead of waiting to be decided.
    ledger_busy_timeout_ms: int = 60_000
    credit: float = 1_000_000.0
    currency: str = "USD"
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 2
    metrics_port: int | None = None  # when the gateway serves metrics: its past-budget count

    @property
    def logins(self) -> range:
        return range(FIRST_LOGIN, FIRST_LOGIN + self.accounts)

    @property
    def lock_at_s(self) -> float:
        """When the lock is taken, from the simulation's start: the hold is centred."""
        return (self.duration_s - self.hold_s) / 2

    def validate(self) -> None:
        if not 0 < self.hold_s < self.duration_s:
            raise ValueError(f"need 0 < hold ({self.hold_s} s) < duration ({self.duration_s} s)")
        if self.ledger_busy_timeout_ms <= self.hold_s * 1000:
            raise ValueError("ledger_busy_timeout_ms must outlast the hold")


def settlement_url(log_path: Path) -> str:
    """The base URL the settlement routes hang under, from the gateway's start-up line."""
    found = SETTLEMENT_READY.findall(log_path.read_bytes())
    if not found:
        raise ScenarioError(f"the gateway did not start its settlement listener; see {log_path}")
    host, port = found[-1]  # the log is appended to: the last start is this gateway's
    return f"http://{host.decode()}:{int(port)}/api"


async def prepare_wallets(
    host: str, port: int, token: str, logins: range, credit: float, tag: str
) -> None:
    """AddUser each login and put `credit` in its wallet, over TCP (CreditInSync: durable and
    applied before its answer, so the simulator's first reading sees it)."""
    clients, failures = await open_clients(host, port, min(FUNDING_CONNECTIONS, len(logins)))
    if failures:
        await close_clients(clients)
        raise ScenarioError(f"cannot connect: {dict(failures)}")
    try:
        await bind_sessions(clients, token, events=False)
        await create_accounts(clients[0], list(logins), tag)

        async def fund(client_index: int) -> None:
            for login in logins[client_index :: len(clients)]:
                data = {"login": login, "amount": credit, "comment": f"{tag} wallet"}
                await expect_ok(clients[client_index], "CreditInSync", data)

        await asyncio.gather(*(fund(i) for i in range(len(clients))))
    finally:
        await close_clients(clients)


async def run_settlement(
    url: str,
    tcp: tuple[str, int, str],
    spec: SettlementSpec,
    server_cpu: ReadCpu,
    own_cpu: ReadCpu,
    progress: bool = False,
) -> tuple[dict[str, Any], SimulationResult]:
    """The reference runs (`tcp` is the gateway's host, port and a token), then the simulation
    bracketed by the gateway's CPU seconds (`server_cpu`) and this process's (`own_cpu`)."""
    references = (
        await reference_runs(
            url, tcp, spec.logins, spec.currency, spec.concurrency, spec.reference_s, server_cpu
        )
        if spec.reference_s > 0
        else None
    )
    simulation = SimulationSpec(
        url=url, currency=spec.currency, logins=spec.logins, concurrency=spec.concurrency,
        duration_s=spec.duration_s, warmup_s=spec.warmup_s, mix=dict(spec.mix), seed=spec.seed,
        progress=progress,
    )  # fmt: skip
    server, own, wall = server_cpu(), own_cpu(), time.perf_counter()
    result = await run_simulation(simulation)
    wall = time.perf_counter() - wall
    server, own = server_cpu() - server, own_cpu() - own
    measured, warmup = result.measured, result.warmup
    # Every HTTP request of the run: adjustments, cancel attempts and both wallet readings.
    requests = measured.sent + warmup.sent + measured.cancel_attempts + warmup.cancel_attempts
    requests += 2 * len(spec.logins)
    cpu = cpu_figures(wall, server, own, requests)
    return {
        "spec": {**asdict(spec), "logins": f"{spec.logins.start}-{spec.logins.stop - 1}"},
        **_figures(result),
        "cpu": cpu,
        "references": references,
        "cpu_compared": (
            None if references is None else compare(cpu["server_cpu_ms_per_request"], references)
        ),
        "simulation": result.to_dict(),
    }, result


def _figures(result: SimulationResult) -> dict[str, Any]:
    """The figures the report judges, from the measured window."""
    latency = result.histogram.summary()
    measured = result.measured
    return {
        "adjustments_per_s": result.adjustments_per_s,
        "confirmed_per_s": result.confirmed_per_s,
        "adjustments": measured.sent,
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "max_ms": latency["max_ms"],
        "outcomes": dict(measured.outcomes),
        "cancels": dict(measured.cancels),
        "problems": measured.problems.total() + result.warmup.problems.total(),
        "wallets": len(result.wallets),
        "mismatches": len(result.mismatches),
        "unresolved_wallets": len(result.unresolved),
        "unresolved_adjustments": sum(len(w.unresolved) for w in result.unresolved),
    }


async def run_settlement_fault(
    url: str, host: str, ledger_path: Path, spec: FaultSpec, progress: bool = False
) -> tuple[dict[str, Any], SimulationResult]:
    """The simulation with the ledger locked from outside for `hold_s` half-way through."""
    spec.validate()
    simulation = SimulationSpec(
        url=url, currency=spec.currency, logins=spec.logins, concurrency=spec.concurrency,
        duration_s=spec.duration_s, mix=dict(spec.mix), seed=spec.seed, progress=progress,
    )  # fmt: skip
    past_budget_before = await _past_budget(host, spec)
    started = time.perf_counter()
    task = asyncio.create_task(run_simulation(simulation))
    try:
        lock = await _hold_lock(ledger_path, started, spec, task)
    finally:
        result = await task  # its failure is the phase's, even while the lock was being held
    past_budget_after = await _past_budget(host, spec)
    past_budget = (
        None
        if past_budget_before is None or past_budget_after is None
        else past_budget_after - past_budget_before
    )
    return {
        "spec": {**asdict(spec), "logins": f"{spec.logins.start}-{spec.logins.stop - 1}"},
        **_figures(result),
        **_fault_figures(result, spec),
        "lock": lock,
        "gateway_past_budget": past_budget,
        "simulation": result.to_dict(),
    }, result


async def _hold_lock(
    ledger_path: Path, started: float, spec: FaultSpec, task: asyncio.Task[SimulationResult]
) -> dict[str, Any]:
    """Wait for the middle of the run, hold the ledger's write lock `hold_s`, release it.
    Nothing is taken when the simulation ended (or failed) before then."""
    await asyncio.wait([task], timeout=max(0.0, started + spec.lock_at_s - time.perf_counter()))
    if task.done():
        return {"taken": False}
    asked = time.perf_counter()
    try:
        lock = await asyncio.to_thread(LedgerLock, ledger_path)  # waits out a commit in progress
    except sqlite3.Error as exc:
        raise ScenarioError(f"cannot lock the ledger: {exc}") from exc
    try:
        await asyncio.sleep(spec.hold_s)  # the fault itself: the gateway stalls this long
    finally:
        held = await asyncio.to_thread(lock.release)
    return {
        "taken": True,
        "asked_at_s": round(asked - started, 3),
        "held_from_s": round(lock.held_since - started, 3),
        "held_s": round(held, 3),
        "note": "seconds since the simulation began (it reads every wallet first)",
    }


def _fault_figures(result: SimulationResult, spec: FaultSpec) -> dict[str, Any]:
    """Every request's answer time against the budget, and what the stall left behind. The
    slowest answer twice: as the gateway timed it (the envelopes' `tm`, from reading the body to
    the answer) and as the simulator did (from its send, so its own queueing is in it)."""
    measured, warmup = result.measured, result.warmup
    unanswered = sum(
        n for outcome, n in measured.outcomes.items() if outcome.startswith("client/")
    ) + (measured.cancels_unanswered + warmup.cancels_unanswered)
    slowest_ms = round(max(measured.slowest_answer_s, warmup.slowest_answer_s) * 1000, 3)
    timed = [tm for tm in (measured.slowest_tm_ms, warmup.slowest_tm_ms) if tm is not None]
    slowest_gateway_ms = max(timed, default=None)
    limit_ms = spec.answer_budget_ms + spec.slack_ms
    return {
        "budget_ms": spec.answer_budget_ms,
        "limit_ms": limit_ms,
        "slowest_gateway_ms": slowest_gateway_ms,
        "slowest_answer_ms": slowest_ms,
        "unanswered": unanswered,
        "all_answered_in_time": (
            unanswered == 0 and slowest_gateway_ms is not None and slowest_gateway_ms <= limit_ms
        ),
        "service_unavailable": measured.outcomes[SERVICE_UNAVAILABLE],
        "cancel_attempts": measured.cancel_attempts,
    }


async def _past_budget(host: str, spec: FaultSpec) -> float | None:
    metrics = await scrape_metrics(host, spec.metrics_port, [PAST_BUDGET])
    return None if metrics is None else metrics.get(PAST_BUDGET)
