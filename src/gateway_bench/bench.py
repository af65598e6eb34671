"""`tools/bench [--quick] --out DIR`: the gateway's benchmark, in one run, written to DIR.

1. A gateway on a fresh temporary data dir (durable commits, `ledger_synchronous=FULL`):
   `CreditInSync` at 50 connections x 4 in flight over 100 accounts, then at 1 x 1.
2. tools/baseline_server.py under the same generator and settings: the ceiling.
3. Event fan-out, idle sessions and pending Sync (`fanout.py`, `idle.py`, `pending.py`), each
   on a gateway of its own so one scenario's memory and state do not colour the next.

Load connections turn their event channels off (PROTOCOL.md section 5), so gateway and baseline
each write one answer frame per request. DIR gets results.json (headline figures, machine,
settings, every run's full result, the scenarios and each target judged), the load generator's
plots per run, the bench's own charts, and each server's log. Targets are reported, not
enforced: the exit code is 0 when the bench ran, even if a target was missed; 1 when a phase
failed (the rest still run and results.json is still written); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .fanout import FanoutSpec, run_fanout
from .idle import IdleSpec, run_idle
from .loadgen import LoadError, LoadResult, LoadSpec, run_load
from .machine import machine_info
from .monitor import free_port
from .pending import PendingSpec, prepare_accounts, run_pending
from .processes import (
    GatewayProcess,
    ProcessError,
    ServerProcess,
    start_baseline,
    start_gateway,
)
from .report import assemble_results, summary_table
from .sessions import ScenarioError, mb, raise_file_limit

PHASES = ("load", "single", "baseline", "fanout", "idle", "pending")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
GATEWAY_SETTINGS = {"ledger_synchronous": "FULL"}  # the figures only count with durable commits
T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    duration_s: float  # each load run's measured time
    warmup_s: float
    fanout_duration_s: float
    fanout_warmup_s: float


PROFILES = {
    "full": Profile(duration_s=60.0, warmup_s=10.0, fanout_duration_s=60.0, fanout_warmup_s=5.0),
    "quick": Profile(duration_s=15.0, warmup_s=3.0, fanout_duration_s=10.0, fanout_warmup_s=2.0),
}


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
    fanout: FanoutSpec = field(default_factory=FanoutSpec)
    idle: IdleSpec = field(default_factory=IdleSpec)
    pending: PendingSpec = field(default_factory=PendingSpec)
    progress: bool = False
    keep_data: bool = False

    def settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "command": "CreditInSync", "connections": self.connections,
            "inflight": self.inflight, "accounts": self.accounts, "duration_s": self.duration_s,
            "warmup_s": self.warmup_s, "single": {"connections": 1, "inflight": 1},
            "events_on_load_connections": False, "skip": sorted(self.skip),
            **GATEWAY_SETTINGS,
        }


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _phases(text: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = names - set(PHASES)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown phase(s) {', '.join(sorted(unknown))}; known: {', '.join(PHASES)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Benchmark the manager-API gateway against the baseline.",
    )
    add = parser.add_argument
    add("--out", type=Path, required=True, help="directory for results.json, plots and logs")
    add("--quick", action="store_true",
        help="15 s per load run and shorter scenarios (about three minutes in all)")
    add("--duration", type=_positive(float), help="seconds measured per load run")
    add("--warmup", type=float, help="seconds of unrecorded load before each run")
    add("--connections", type=_positive(int), default=50)
    add("--inflight", type=_positive(int), default=4)
    add("--accounts", type=_positive(int), default=100,
        help="logins the load spreads over, in every phase (default 100)")
    add("--skip", type=_phases, default=frozenset(),
        help=f"comma-separated phases to leave out: {','.join(PHASES)}")
    add("--fanout-rate", type=_positive(float), default=FanoutSpec.rate,
        help="writer operations/s in the fan-out scenario (2 events each per listener)")
    add("--fanout-listeners", type=_positive(int), default=FanoutSpec.listeners)
    add("--idle-connections", type=_positive(int), default=IdleSpec.connections)
    add("--pending-requests", type=_positive(int), default=PendingSpec.requests)
    add("--pending-timeout-ms", type=_positive(int), default=PendingSpec.sync_timeout_ms,
        help="the pending scenario gateway's sync_timeout_ms")
    add("--no-progress", action="store_true", help="no progress bars on stderr")
    add("--keep-data", action="store_true", help="keep the gateways' temporary data dirs")
    return parser


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    mode = "quick" if args.quick else "full"
    profile = PROFILES[mode]
    duration = args.duration if args.duration is not None else profile.duration_s
    warmup = args.warmup if args.warmup is not None else profile.warmup_s
    if warmup < 0:
        raise ValueError(f"--warmup must be zero or more, got {warmup}")
    pending_connections = max(1, -(-args.pending_requests // PendingSpec.max_per_connection))
    return BenchOptions(
        out=args.out, mode=mode, duration_s=duration, warmup_s=warmup,
        connections=args.connections, inflight=args.inflight, accounts=args.accounts,
        skip=args.skip,
        fanout=FanoutSpec(listeners=args.fanout_listeners, rate=args.fanout_rate,
                          duration_s=min(profile.fanout_duration_s, duration),
                          warmup_s=min(profile.fanout_warmup_s, warmup),
                          accounts=args.accounts),
        idle=IdleSpec(connections=args.idle_connections),
        pending=PendingSpec(requests=args.pending_requests, connections=pending_connections,
                            sync_timeout_ms=args.pending_timeout_ms, accounts=args.accounts),
        progress=not args.no_progress and sys.stderr.isatty(),
        keep_data=args.keep_data,
    )


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
        self.started = time.perf_counter()

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {text}", flush=True)

    async def guard(self, phase: str, action: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await action()
        except (LoadError, ScenarioError, ProcessError, OSError, TimeoutError) as exc:
            self.failures[phase] = f"{type(exc).__name__}: {exc}"
            self.say(f"!! {phase} failed: {exc}")
            return None

    async def run(self) -> dict[str, Any]:
        self.started = started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        raise_file_limit()
        machine = machine_info()
        skip = self.options.skip
        try:
            if not {"load", "single"} <= skip:
                await self.guard("gateway", self.gateway_runs)
            if "baseline" not in skip:
                await self.guard("baseline", self.baseline_run)
            for name, scenario in (("fanout", self.fanout), ("idle", self.idle),
                                   ("pending", self.pending)):
                if name not in skip:
                    self.say(f"== {name}")
                    await self.guard(name, scenario)
        finally:
            if not self.options.keep_data:
                shutil.rmtree(self.data, ignore_errors=True)
        runs = {name: result.to_dict() for name, result in self.results.items()}
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        settings = {**self.options.settings(), "gateway_rss_mb": self.gateway_memory,
                    "data_dir": str(self.data) if self.options.keep_data else "(removed)"}
        return assemble_results(
            machine=machine, settings=settings, runs=runs, cpu=self.cpu,
            fanout=self.scenarios.get("fanout"), idle=self.scenarios.get("idle"),
            pending=self.scenarios.get("pending"), failures=self.failures,
            wall_time_s=time.perf_counter() - started,
        )

    def load_spec(self, port: int, token: str | None) -> LoadSpec:
        o = self.options
        return LoadSpec(
            host="127.0.0.1", port=port, connections=o.connections, inflight=o.inflight,
            duration_s=o.duration_s, warmup_s=o.warmup_s, mix={"CreditInSync": 1.0},
            accounts=o.accounts, create_accounts=True, token=token, events=False,
            progress=o.progress,
        )

    async def measure(self, name: str, server: ServerProcess, spec: LoadSpec) -> None:
        self.say(f"== {name} ({server.name}): {spec.connections} x {spec.inflight} in flight, "
                 f"{spec.duration_s:g} s (+{spec.warmup_s:g} s warm-up)")
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
            if "load" not in self.options.skip:
                await self.guard("load", lambda: self.measure("gateway", gateway, spec))
                spec = replace(spec, create_accounts=False)
                self.gateway_memory["after_load"] = mb(gateway.rss_bytes())
            if "single" not in self.options.skip:
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
            self.say(f"{result['delivered_per_s']:,.0f} events/s delivered to "
                     f"{result['listeners']} listeners, send-to-receipt p50 {delay['p50']} ms "
                     f"p99 {delay['p99']} ms, every event once: {result['every_event_once']}")
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
            self.say(f"{result['authenticated']:,} of {spec.connections:,} sessions held, "
                     f"gateway RSS {result['rss_before_mb']} -> {result['rss_held_mb']} -> "
                     f"{result['rss_after_mb']} MB, HealthCheck {result['health_check']}")
        finally:
            await asyncio.to_thread(gateway.stop)

    async def pending(self) -> None:
        """Accounts are made on a first process; the scenario runs on a second one that only
        loaded them, so "before" is a fresh process's memory; a third, fresh on the final
        ledger, shows what the grown state alone costs."""
        metrics_port = free_port()
        spec = replace(self.options.pending, metrics_port=metrics_port, create_accounts=False)
        setup = await self.start_gateway("pending")
        try:
            token = await asyncio.to_thread(setup.mint_token)
            await prepare_accounts(setup.host, setup.port, token, spec)
        finally:
            await asyncio.to_thread(setup.stop)
        gateway = await self.start_gateway(
            "pending", metrics_port=str(metrics_port), sync_timeout_ms=str(spec.sync_timeout_ms)
        )
        try:
            result = await run_pending(gateway.host, gateway.port, token, gateway.ledger_path,
                                       spec, gateway.rss_bytes, gateway.log_path)
        finally:
            await asyncio.to_thread(gateway.stop)
        fresh = await self.start_gateway("pending")
        result["rss_fresh_same_ledger_mb"] = mb(fresh.rss_bytes())
        await asyncio.to_thread(fresh.stop)
        self.scenarios["pending"] = result
        self.say(f"{result['timed_out_on_time']:,} of {spec.requests:,} answered 504 on time "
                 f"(late {result['timed_out_late']}, other {result['not_504']}, missing "
                 f"{result['missing']}); RSS {result['rss_before_mb']} -> peak "
                 f"{result['rss_peak_mb']} -> {result['rss_after_mb']} MB (fresh process on "
                 f"the same ledger {result['rss_fresh_same_ledger_mb']} MB)")

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
        from .charts import comparison_chart, fanout_delay_chart, pending_memory_chart
        from .plot import plot_result

        written: list[Path] = []
        for name, result in self.results.items():
            written += plot_result(result, self.out, name)
        compared = {name: run for name, run in results["runs"].items()
                    if name in ("gateway", "baseline")}
        if compared:
            written.append(comparison_chart(compared, self.out / "comparison-throughput.png"))
        if results["fanout"] is not None:
            written.append(fanout_delay_chart(results["fanout"], self.out / "fanout-delay.png"))
        if results["pending"] is not None:
            written.append(pending_memory_chart(results["pending"],
                                                self.out / "pending-memory.png"))
        return written


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    bench = Bench(options)
    results = _run(bench.run())
    written = bench.write(results)
    print()
    print(summary_table(results))
    print(f"\nwrote {len(written)} files to {options.out}: results.json, "
          f"{sum(path.suffix == '.png' for path in written)} plots")
    return EXIT_FAILED if results["failures"] else EXIT_OK


def _run(coroutine: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await coroutine

    try:
        import uvloop
    except ImportError:
        return asyncio.run(wrapped())
    return uvloop.run(wrapped())


if __name__ == "__main__":
    sys.exit(main())
