"""The bench's phases, run in order by `Bench`: the load runs, the baseline, the scenarios.

A phase that fails (a server that does not start, a refused set-up request) is recorded under
its name and the next one still runs, so one problem does not cost the other figures. Each
scenario gets a gateway of its own so one's memory and state do not colour the next; every
server's output goes to a log in the output directory. `history` (history_phase.py: millions of
operations, then restarts) takes long and runs only when asked for (`--phase history`).
`postgres` (postgres_phase.py) runs the load on SQLite and on PostgreSQL with one and two nodes.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .fanout import FanoutSpec, run_fanout
from .history_phase import HistorySpec, history_text, run_history
from .idle import IdleSpec, run_idle
from .loadgen import LoadError, LoadResult, LoadSpec, run_load
from .machine import machine_info
from .monitor import free_port
from .pending import PendingSpec, prepare_accounts, run_pending
from .postgres_phase import postgres_text, run_postgres
from .processes import (
    GatewayProcess,
    ProcessError,
    ServerProcess,
    start_baseline,
    start_gateway,
)
from .report import assemble_results, cpu_text
from .sessions import ScenarioError, mb, raise_file_limit
from .settlement.simresult import SimulationResult
from .settlement.simulator import SimulationError
from .settlement_phase import (
    FaultSpec,
    SettlementSpec,
    prepare_wallets,
    run_settlement,
    run_settlement_fault,
    settlement_url,
)

PHASES = (
    "load",
    "single",
    "baseline",
    "fanout",
    "idle",
    "pending",
    "settlement",
    "settlement-fault",
    "postgres",
    "history",
)
# What runs unless --phase says otherwise: every phase but the long history one.
DEFAULT_PHASES = tuple(name for name in PHASES if name != "history")
GATEWAY_SETTINGS = {"ledger_synchronous": "FULL"}  # the figures only count with durable commits
T = TypeVar("T")


@dataclass
class BenchOptions:
    out: Path
    mode: str = "full"
    duration_s: float = 60.0
    warmup_s: float = 10.0
    connections: int = 50
    inflight: int = 4
    accounts: int = 100
    skip: frozenset[str] = frozenset()
    phases: frozenset[str] = frozenset(DEFAULT_PHASES)  # --phase: what may run; skip is taken out
    fanout: FanoutSpec = field(default_factory=FanoutSpec)
    idle: IdleSpec = field(default_factory=IdleSpec)
    pending: PendingSpec = field(default_factory=PendingSpec)
    settlement: SettlementSpec = field(default_factory=SettlementSpec)
    settlement_fault: FaultSpec = field(default_factory=FaultSpec)
    history: HistorySpec = field(default_factory=HistorySpec)
    progress: bool = False
    keep_data: bool = False

    def settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "command": "CreditInSync",
            "connections": self.connections,
            "inflight": self.inflight,
            "accounts": self.accounts,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "single": {"connections": 1, "inflight": 1},
            "events_on_load_connections": False,
            "skip": sorted(self.skip),
            "phases": [name for name in PHASES if self.runs(name)],
            **GATEWAY_SETTINGS,
        }

    def runs(self, phase: str) -> bool:
        """Whether `phase` runs: selected (--phase, by default all but history), not skipped."""
        return phase in self.phases and phase not in self.skip


class Bench:
    """One benchmark run: phases in order, a failed phase recorded and the rest still run."""

    def __init__(self, options: BenchOptions) -> None:
        self.options = options
        self.out = options.out
        self.data = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.failures: dict[str, str] = {}
        self.results: dict[str, LoadResult] = {}
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.gateway_memory: dict[str, float | None] = {}
        self.cpu: dict[str, dict[str, float]] = {}
        self.simulations: dict[str, SimulationResult] = {}
        self.started = time.perf_counter()

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {text}", flush=True)

    async def guard(self, phase: str, action: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await action()
        except (
            LoadError,
            ScenarioError,
            ProcessError,
            SimulationError,
            OSError,
            TimeoutError,
        ) as exc:
            self.failures[phase] = f"{type(exc).__name__}: {exc}"
            self.say(f"!! {phase} failed: {exc}")
            return None

    async def run(self) -> dict[str, Any]:
        self.started = started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        raise_file_limit()
        machine = machine_info()
        selected = self.options.runs
        try:
            if selected("load") or selected("single"):
                await self.guard("gateway", self.gateway_runs)
            if selected("baseline"):
                await self.guard("baseline", self.baseline_run)
            for name, scenario in (
                ("fanout", self.fanout),
                ("idle", self.idle),
                ("pending", self.pending),
                ("settlement", self.settlement),
                ("settlement-fault", self.settlement_fault),
                ("postgres", self.postgres),
                ("history", self.history),
            ):
                if selected(name):
                    self.say(f"== {name}")
                    await self.guard(name, scenario)
        finally:
            if not self.options.keep_data:
                shutil.rmtree(self.data, ignore_errors=True)
        runs = {name: result.to_dict() for name, result in self.results.items()}
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        settings = {
            **self.options.settings(),
            "gateway_rss_mb": self.gateway_memory,
            "data_dir": str(self.data) if self.options.keep_data else "(removed)",
        }
        return assemble_results(
            machine=machine,
            settings=settings,
            runs=runs,
            cpu=self.cpu,
            fanout=self.scenarios.get("fanout"),
            idle=self.scenarios.get("idle"),
            pending=self.scenarios.get("pending"),
            settlement=self.scenarios.get("settlement"),
            settlement_fault=self.scenarios.get("settlement-fault"),
            history=self.scenarios.get("history"),
            postgres=self.scenarios.get("postgres"),
            failures=self.failures,
            wall_time_s=time.perf_counter() - started,
        )

    def load_spec(self, port: int, token: str | None) -> LoadSpec:
        o = self.options
        return LoadSpec(
            host="127.0.0.1",
            port=port,
            connections=o.connections,
            inflight=o.inflight,
            duration_s=o.duration_s,
            warmup_s=o.warmup_s,
            mix={"CreditInSync": 1.0},
            accounts=o.accounts,
            create_accounts=True,
            token=token,
            events=False,
            progress=o.progress,
        )

    async def measure(self, name: str, server: ServerProcess, spec: LoadSpec) -> None:
        self.say(
            f"== {name} ({server.name}): {spec.connections} x {spec.inflight} in flight, "
            f"{spec.duration_s:g} s (+{spec.warmup_s:g} s warm-up)"
        )
        server_cpu, own_cpu, wall = server.cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        result = await run_load(spec)
        wall = time.perf_counter() - wall
        # Both share the machine: how busy each was tells who limited the throughput.
        self.cpu[name] = {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(server.cpu_seconds() - server_cpu, 3),
            "generator_cpu_s": round(_own_cpu_seconds() - own_cpu, 3),
        }
        self.results[name] = result
        self.say(result.summary())

    async def gateway_runs(self) -> None:
        gateway = await self.start_gateway("gateway")
        try:
            self.gateway_memory["start"] = mb(gateway.rss_bytes())
            spec = self.load_spec(gateway.port, await asyncio.to_thread(gateway.mint_token))
            if self.options.runs("load"):
                await self.guard("load", lambda: self.measure("gateway", gateway, spec))
                spec = replace(spec, create_accounts=False)
                self.gateway_memory["after_load"] = mb(gateway.rss_bytes())
            if self.options.runs("single"):
                single = replace(spec, connections=1, inflight=1)
                await self.guard("single", lambda: self.measure("single", gateway, single))
        finally:
            await asyncio.to_thread(gateway.stop)

    async def baseline_run(self) -> None:
        baseline = await asyncio.to_thread(start_baseline, self.out / "baseline.log")
        try:
            spec = self.load_spec(baseline.port, None)
            await self.measure("baseline", baseline, spec)
        finally:
            await asyncio.to_thread(baseline.stop)

    async def start_gateway(self, name: str, **settings: str) -> GatewayProcess:
        log = self.out / ("gateway.log" if name == "gateway" else f"gateway-{name}.log")
        return await asyncio.to_thread(
            start_gateway, self.data / name, log, {**GATEWAY_SETTINGS, **settings}
        )

    async def fanout(self) -> None:
        gateway = await self.start_gateway("fanout")
        try:
            token = await asyncio.to_thread(gateway.mint_token)
            result = await run_fanout(gateway.host, gateway.port, token, self.options.fanout)
            result["gateway_rss_mb"] = mb(gateway.rss_bytes())
            self.scenarios["fanout"] = result
            delay = result["delay_ms"]
            self.say(
                f"{result['delivered_per_s']:,.0f} events/s delivered to "
                f"{result['listeners']} listeners, send-to-receipt p50 {delay['p50']} ms "
                f"p99 {delay['p99']} ms, every event once: {result['every_event_once']}"
            )
        finally:
            await asyncio.to_thread(gateway.stop)

    async def idle(self) -> None:
        metrics_port = free_port()
        gateway = await self.start_gateway("idle", metrics_port=str(metrics_port))
        try:
            token = await asyncio.to_thread(gateway.mint_token)
            spec = replace(self.options.idle, metrics_port=metrics_port)
            result = await run_idle(gateway.host, gateway.port, token, spec, gateway.rss_bytes)
            self.scenarios["idle"] = result
            self.say(
                f"{result['authenticated']:,} of {spec.connections:,} sessions held, "
                f"gateway RSS {result['rss_before_mb']} -> {result['rss_held_mb']} -> "
                f"{result['rss_after_mb']} MB, HealthCheck {result['health_check']}"
            )
        finally:
            await asyncio.to_thread(gateway.stop)

    async def pending(self) -> None:
        """The account is made on a first process, so its password hashing is not in the
        scenario's memory; the scenario runs on a second one that only loaded it, with metrics
        on (its allocated blocks and waiters are read) and a busy timeout that outlasts the
        held lock, so the plug's commit waits until the bench releases it."""
        metrics_port = free_port()
        spec = replace(self.options.pending, metrics_port=metrics_port, create_accounts=False)
        setup = await self.start_gateway("pending")
        try:
            token = await asyncio.to_thread(setup.mint_token)
            await prepare_accounts(setup.host, setup.port, token, spec)
        finally:
            await asyncio.to_thread(setup.stop)
        gateway = await self.start_gateway(
            "pending",
            metrics_port=str(metrics_port),
            sync_timeout_ms=str(spec.sync_timeout_ms),
            ledger_busy_timeout_ms=str(spec.ledger_busy_timeout_ms),
        )
        try:
            result = await run_pending(
                gateway.host,
                gateway.port,
                token,
                gateway.ledger_path,
                spec,
                gateway.rss_bytes,
                gateway.log_path,
            )
        finally:
            await asyncio.to_thread(gateway.stop)
        self.scenarios["pending"] = result
        self.say(
            f"{result['timed_out_on_time']:,} of {spec.requests:,} answered 504 on time "
            f"(late {result['timed_out_late']}, other {result['not_504']}, missing "
            f"{result['missing']}); ledger records after {result['ledger_records_after']} "
            f"(expected {result['ledger_records_expected']}); allocated blocks "
            f"{_fmt_blocks(result, 'before')} -> peak {_fmt_blocks(result, 'peak')} -> "
            f"{_fmt_blocks(result, 'after')}; RSS {result['rss_before_mb']} -> peak "
            f"{result['rss_peak_mb']} -> {result['rss_after_mb']} MB"
        )

    async def start_settlement_gateway(
        self, name: str, spec: SettlementSpec | FaultSpec, **settings: str
    ) -> tuple[GatewayProcess, str, str]:
        """A gateway with its settlement listener on a free port and the spec's wallets created
        and funded over TCP; the gateway, the URL its routes hang under and a manager token."""
        gateway = await self.start_gateway(name, settlement_port=str(free_port()), **settings)
        try:
            url = settlement_url(gateway.log_path)
            token = await asyncio.to_thread(gateway.mint_token)
            await prepare_wallets(gateway.host, gateway.port, token, spec.logins, spec.credit, name)
        except BaseException:
            await asyncio.to_thread(gateway.stop)
            raise
        return gateway, url, token

    async def settlement(self) -> None:
        """The simulator closed loop after a CreditInSync reference run on the same gateway."""
        spec = self.options.settlement
        gateway, url, token = await self.start_settlement_gateway("settlement", spec)
        try:
            self.say(
                f"{spec.concurrency} adjustments in flight over {spec.accounts} wallets, "
                f"{spec.duration_s:g} s (+{spec.warmup_s:g} s warm-up), after three "
                f"{spec.reference_s:g} s reference runs (CreditInSync and an account read over "
                "TCP, the same read over HTTP)"
            )
            result, simulation = await run_settlement(
                url,
                (gateway.host, gateway.port, token),
                spec,
                gateway.cpu_seconds,
                _own_cpu_seconds,
                self.options.progress,
            )
        finally:
            await asyncio.to_thread(gateway.stop)
        self.scenarios["settlement"] = result
        self.simulations["settlement"] = simulation
        self.say(simulation.summary())
        self.say(cpu_text(result))

    async def settlement_fault(self) -> None:
        """The simulator with the ledger locked from outside half-way through; the gateway
        serves metrics (its past-budget count) and waits out the lock in its commit."""
        metrics_port = free_port()
        spec = replace(self.options.settlement_fault, metrics_port=metrics_port)
        gateway, url, _ = await self.start_settlement_gateway(
            "settlement-fault",
            spec,
            metrics_port=str(metrics_port),
            settlement_answer_budget_ms=str(spec.answer_budget_ms),
            ledger_busy_timeout_ms=str(spec.ledger_busy_timeout_ms),
        )
        try:
            self.say(
                f"{spec.concurrency} adjustments in flight over {spec.accounts} wallets for "
                f"{spec.duration_s:g} s, the ledger locked for {spec.hold_s:g} s from "
                f"{spec.lock_at_s:g} s, answer budget {spec.answer_budget_ms} ms"
            )
            result, simulation = await run_settlement_fault(
                url, gateway.host, gateway.ledger_path, spec, self.options.progress
            )
        finally:
            await asyncio.to_thread(gateway.stop)
        self.scenarios["settlement-fault"] = result
        self.simulations["settlement-fault"] = simulation
        self.say(simulation.summary())
        self.say(fault_text(result))

    async def postgres(self) -> None:
        """The load on SQLite, then on PostgreSQL with one node and two, spread and hot."""
        result = await run_postgres(
            self.load_spec(0, None),
            self.data / "postgres",
            self.out,
            dict(GATEWAY_SETTINGS),
            self.say,
        )
        self.scenarios["postgres"] = result
        self.say(postgres_text(result))

    async def history(self) -> None:
        """Fill a ledger, restart on it, compare throughput with the in-memory design; the
        CreditInSync runs are the load phase's (its connections, durations, accounts)."""
        spec = self.options.history
        # The fill's accounts are the load's logins and more, unless the load spreads wider.
        load_logins = range(LoadSpec.first_login, LoadSpec.first_login + self.options.accounts)
        create = not (
            spec.logins.start <= load_logins.start and load_logins.stop <= spec.logins.stop
        )

        def load_spec(port: int, token: str) -> LoadSpec:
            return replace(self.load_spec(port, token), create_accounts=create)

        result = await run_history(
            spec,
            self.data / "history",
            self.out / "gateway-history.log",
            load_spec,
            dict(GATEWAY_SETTINGS),
            self.say,
        )
        self.scenarios["history"] = result
        self.say(history_text(result))

    def write(self, results: dict[str, Any]) -> list[Path]:
        """results.json and every plot; a plot that fails is recorded, not fatal."""
        written = []
        try:
            written = self.plots(results)
        except Exception as exc:  # matplotlib problems must not lose the figures
            results["failures"]["plots"] = f"{type(exc).__name__}: {exc}"
        results["files"] = sorted(path.name for path in written)
        path = self.out / "results.json"
        path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
        return [path, *written]

    def plots(self, results: dict[str, Any]) -> list[Path]:
        from .charts import (
            comparison_chart,
            fanout_delay_chart,
            history_memory_chart,
            pending_memory_chart,
        )
        from .plot import plot_result
        from .settlement.plots import plot_simulation

        written: list[Path] = []
        for name, result in self.results.items():
            written += plot_result(result, self.out, name)
        compared = {
            name: run for name, run in results["runs"].items() if name in ("gateway", "baseline")
        }
        if compared:
            written.append(comparison_chart(compared, self.out / "comparison-throughput.png"))
        if results["fanout"] is not None:
            written.append(fanout_delay_chart(results["fanout"], self.out / "fanout-delay.png"))
        if results["pending"] is not None:
            written.append(
                pending_memory_chart(results["pending"], self.out / "pending-memory.png")
            )
        if results.get("history") is not None:
            written.append(
                history_memory_chart(results["history"], self.out / "history-memory.png")
            )
        for name, simulation in self.simulations.items():
            written += plot_simulation(simulation, self.out, name)  # NAME-timeline/-latency.png
        return written


def _fmt_blocks(result: dict[str, Any], when: str) -> str:
    value = result[f"allocated_blocks_{when}"]
    return "-" if value is None else f"{value:,.0f}"


def fault_text(result: dict[str, Any]) -> str:
    """The fault phase in a line: the lock, the slowest answer, what the stall left behind."""
    lock = result["lock"]
    held = (
        f"ledger locked {lock['held_s']:g} s from {lock['held_from_s']:g} s"
        if lock.get("taken")
        else "ledger never locked (the run ended first)"
    )
    return (
        f"{held}: slowest answer {result['slowest_gateway_ms']} ms by the gateway's clock, "
        f"{result['slowest_answer_ms']:,.0f} ms by the simulator's (limit "
        f"{result['limit_ms']} ms), unanswered {result['unanswered']}, SERVICE_UNAVAILABLE "
        f"{result['service_unavailable']} (gateway past budget {result['gateway_past_budget']}), "
        f"unresolved wallets {result['unresolved_wallets']}, mismatches {result['mismatches']}"
    )


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
