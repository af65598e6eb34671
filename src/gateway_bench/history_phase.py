"""The bench's `history` phase (issue 10, "History on disk"): a long ledger, memory and restart.

The gateway holds every account and a window of the newest records, idempotency keys and
settlement journal rows (`history_window`); older ones stay in the ledger. This phase checks what
that promises, on one data dir of its own, with durable commits:

1. **Accounts**: `accounts` logins (the load generator's, from `LoadSpec.first_login`) are
   created on a gateway process of their own, so scrypt's memory is not in the figures.
2. **Fill**: a fresh gateway (default window) takes `operations` async `CreditIn` over TCP, on
   `connections` connections with `inflight` each outstanding, spread over the accounts: each ack
   (status 200) is a durably committed operation. Any other answer, a lost connection or a stall
   of `stall_s` without an ack fails the phase. The gateway's RSS is sampled at the start, every
   `operations / SAMPLES` acks, at half the operations and at the end.
3. **Restart**: SIGTERM (it must exit 0), then a new gateway on the same data dir, timed from
   the process's spawn until it answers a `HealthCheck`.
4. **Throughput**: the standard `CreditInSync` load (50 x 4 over 100 accounts, the bench's
   durations) against the windowed gateway (the default window: once the fill has pushed keys out
   of memory, every batch of new keys is looked up in the ledger) and against the in-memory
   design (the same gateway with `history_window` = `in_memory_window`, larger than the whole
   history, restarted on the same data dir: nothing is ever looked up), interleaved A, B, A, B
   (`pairs` of each) against the machine's drift. The ratio is of the medians.

Every start of the phase's gateway appends to one log; each stage's `batch_committed` lines (one
per batch: operations, commit_ms, total_ms) are summarised from it, which says where a slow stage
spent its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from .client import GatewayClient, encode_request
from .loadgen import LoadSpec, run_load
from .processes import GatewayProcess, start_gateway
from .sessions import (
    ScenarioError,
    bind_sessions,
    close_clients,
    create_accounts,
    describe,
    expect_ok,
    mb,
    open_clients,
    percentile,
)

SAMPLES = 20  # RSS samples (and progress lines) over the fill
ACCOUNTS_PER_CONNECTION = 500  # AddUser pipelined per connection, under max_inflight (1024)
COMMENT = "history fill"
WINDOWED, IN_MEMORY = "windowed", "in-memory"

Say = Callable[[str], None]
# The standard CreditInSync load spec against a gateway's port with a token.
LoadSpecFor = Callable[[int, str], LoadSpec]


@dataclass(frozen=True)
class HistorySpec:
    operations: int = 2_000_000
    accounts: int = 1_000
    connections: int = 8
    inflight: int = 512  # per connection: 8 x 512 = the gateway's max_batch, under max_inflight
    pairs: int = 2  # throughput runs of each design, interleaved
    # The in-memory design's history_window: larger than any history this phase writes (the fill
    # and the throughput runs), so it never forgets a record or a key.
    in_memory_window: int = 1_000_000_000
    first_login: int = LoadSpec.first_login
    stall_s: float = 300.0  # the fill fails when no ack arrives for this long
    ready_timeout_s: float = 600.0  # the in-memory design reads the whole ledger at start-up

    @property
    def logins(self) -> range:
        return range(self.first_login, self.first_login + self.accounts)

    @property
    def half(self) -> int:
        return self.operations // 2

    def validate(self) -> None:
        if self.operations < 2:
            raise ValueError(f"history operations must be at least 2, got {self.operations}")
        for name in ("accounts", "connections", "inflight", "pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"history {name} must be at least 1")
        if self.inflight > 1024:
            raise ValueError("history inflight must stay within the gateway's max_inflight (1024)")


async def run_history(
    spec: HistorySpec,
    data_dir: Path,
    log_path: Path,
    load_spec: LoadSpecFor,
    settings: dict[str, str],
    say: Say = print,
) -> dict[str, Any]:
    """The whole phase; `settings` go to every gateway start (the in-memory design's window on
    top). Raises ScenarioError (or ProcessError, LoadError, OSError) when a stage fails."""
    spec.validate()
    stages = _Stages(spec, data_dir, log_path, settings, say)
    try:
        token = await stages.create_accounts()
        fill = await stages.fill(token)
        restart = await stages.restart()
        throughput = await stages.throughput(load_spec, token)
    finally:
        await stages.stop_running()
    half_mb, end_mb = fill["rss_mb"]["half"], fill["rss_mb"]["end"]
    return {
        "spec": asdict(spec),
        "settings": settings,
        "rss_start_mb": fill["rss_mb"]["start"],
        "rss_half_mb": half_mb,
        "rss_end_mb": end_mb,
        "rss_growth_mb": round(end_mb - half_mb, 1),
        "restart_s": restart["start_s"],
        "throughput_ratio": throughput["ratio"],
        "fill": fill,
        "restart": restart,
        "throughput": throughput,
        "accounts_s": stages.accounts_s,
    }


class _Stages:
    """The phase's stages over one data dir; at most one gateway runs at a time."""

    def __init__(
        self,
        spec: HistorySpec,
        data_dir: Path,
        log_path: Path,
        settings: dict[str, str],
        say: Say,
    ) -> None:
        self.spec = spec
        self.data_dir = data_dir
        self.log_path = log_path
        self.settings = settings
        self.say = say
        self.gateway: GatewayProcess | None = None
        self.accounts_s = 0.0

    async def start(self, design: str) -> tuple[GatewayProcess, float]:
        """A gateway of `design` on the data dir, and seconds from its spawn until it answered a
        HealthCheck (the log's `listening` line is polled every 20 ms, then one connection)."""
        settings = dict(self.settings)
        if design == IN_MEMORY:
            settings["history_window"] = str(self.spec.in_memory_window)
        started = time.perf_counter()
        gateway = await asyncio.to_thread(
            start_gateway,
            self.data_dir,
            self.log_path,
            settings,
            ready_timeout_s=self.spec.ready_timeout_s,
        )
        self.gateway = gateway
        client = await GatewayClient.connect(gateway.host, gateway.port)
        try:
            await expect_ok(client, "HealthCheck", {})
        finally:
            client.close()
            await client.wait_closed()
        return gateway, round(time.perf_counter() - started, 3)

    async def stop(self) -> dict[str, Any]:
        """SIGTERM the running gateway and wait; a stop that is not clean fails the phase."""
        gateway, self.gateway = self.gateway, None
        if gateway is None:
            return {}
        started = time.perf_counter()
        code = await asyncio.to_thread(gateway.stop)
        if code != 0:
            raise ScenarioError(f"the gateway exited {code} on SIGTERM; see {self.log_path}")
        return {"stop_s": round(time.perf_counter() - started, 3), "exit_code": code}

    async def stop_running(self) -> None:
        if self.gateway is not None:
            gateway, self.gateway = self.gateway, None
            await asyncio.to_thread(gateway.stop)

    async def create_accounts(self) -> str:
        """AddUser every login on a gateway of its own; returns a manager token for the dir."""
        spec = self.spec
        gateway, _ = await self.start(WINDOWED)
        token = await asyncio.to_thread(gateway.mint_token)
        started = time.perf_counter()
        logins = list(spec.logins)
        count = -(-len(logins) // ACCOUNTS_PER_CONNECTION)
        clients, failures = await open_clients(gateway.host, gateway.port, count)
        if failures:
            await close_clients(clients)
            raise ScenarioError(f"cannot connect: {dict(failures)}")
        try:
            await bind_sessions(clients, token, events=False)
            await asyncio.gather(
                *(
                    create_accounts(client, logins[i :: len(clients)], "history")
                    for i, client in enumerate(clients)
                )
            )
        finally:
            await close_clients(clients)
        self.accounts_s = round(time.perf_counter() - started, 1)
        await self.stop()
        self.say(f"history: {len(logins):,} accounts created in {self.accounts_s:g} s")
        return token

    async def fill(self, token: str) -> dict[str, Any]:
        spec = self.spec
        gateway, start_s = await self.start(WINDOWED)
        offset = _log_size(self.log_path)
        clients, failures = await open_clients(gateway.host, gateway.port, spec.connections)
        if failures:
            await close_clients(clients)
            raise ScenarioError(f"cannot connect: {dict(failures)}")
        try:
            await bind_sessions(clients, token, events=False)
            self.say(
                f"history: filling {spec.operations:,} CreditIn over {spec.accounts:,} accounts, "
                f"{spec.connections} connections x {spec.inflight} in flight"
            )
            fill = _Fill(spec, clients, gateway.rss_bytes, self.say)
            cpu = gateway.cpu_seconds()
            await fill.run()
            cpu = gateway.cpu_seconds() - cpu
        finally:
            await close_clients(clients)
        result = fill.result()
        result["start_s"] = start_s
        result["gateway_cpu_s"] = round(cpu, 1)
        result["batches"] = batch_stats(self.log_path, offset)
        return result

    async def restart(self) -> dict[str, Any]:
        """Stop the filled gateway cleanly and time a windowed start on its data dir."""
        stopped = await self.stop()
        gateway, start_s = await self.start(WINDOWED)
        loaded = loaded_at_start(self.log_path)
        rss = mb(gateway.rss_bytes())
        self.say(
            f"history: stopped in {stopped['stop_s']:g} s (exit {stopped['exit_code']}); "
            f"restarted to listening in {start_s:g} s, {loaded.get('records')} records and "
            f"{loaded.get('idempotency_keys')} keys loaded, RSS {rss} MB"
        )
        return {**stopped, "start_s": start_s, "rss_mb": rss, "loaded": loaded}

    async def throughput(self, load_spec: LoadSpecFor, token: str) -> dict[str, Any]:
        """A B A B: the windowed gateway (already running after the restart) and the in-memory
        design, each restarted on the same data dir in turn."""
        runs = []
        for pair in range(self.spec.pairs):
            for design in (WINDOWED, IN_MEMORY):
                runs.append(await self.measure(design, pair + 1, load_spec, token))
        medians = {
            design: statistics.median(run["rps"] for run in runs if run["design"] == design)
            for design in (WINDOWED, IN_MEMORY)
        }
        ratio = round(medians[WINDOWED] / medians[IN_MEMORY], 3) if medians[IN_MEMORY] else None
        return {
            "runs": runs,
            "windowed_median_rps": medians[WINDOWED],
            "in_memory_median_rps": medians[IN_MEMORY],
            "ratio": ratio,
            "errors": sum(run["errors"] for run in runs),
        }

    async def measure(
        self, design: str, pair: int, load_spec: LoadSpecFor, token: str
    ) -> dict[str, Any]:
        start_s = None
        if self.gateway is None:
            _, start_s = await self.start(design)
        gateway = self.gateway
        assert gateway is not None
        loaded = loaded_at_start(self.log_path)
        spec = load_spec(gateway.port, token)
        self.say(
            f"== history {design} {pair}: CreditInSync {spec.connections} x {spec.inflight}, "
            f"{spec.duration_s:g} s (+{spec.warmup_s:g} s warm-up); "
            + ("" if start_s is None else f"started in {start_s:g} s, ")
            + f"{loaded.get('records')} records in memory"
        )
        offset = _log_size(self.log_path)
        cpu, wall = gateway.cpu_seconds(), time.perf_counter()
        result = await run_load(spec)
        cpu, wall = gateway.cpu_seconds() - cpu, time.perf_counter() - wall
        rss = mb(gateway.rss_bytes())
        await self.stop()
        self.say(result.summary())
        latency = result.histogram.summary()
        return {
            "design": design,
            "pair": pair,
            "load": f"{'+'.join(spec.mix)} {spec.connections}x{spec.inflight}",
            "rps": result.rps,
            "ok": result.ok,
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "errors": sum(result.errors.values()) + result.mismatches,
            "error_kinds": dict(result.errors),
            "start_s": start_s,
            "records_in_memory": loaded.get("records"),
            "keys_in_memory": loaded.get("idempotency_keys"),
            "rss_after_mb": rss,
            "server_cores": round(cpu / wall, 2) if wall else None,
            "batches": batch_stats(self.log_path, offset),
        }


class _Fill:
    """`operations` CreditIn, each connection keeping `inflight` outstanding; answers arrive as
    callbacks (no future per request), the next request is sent from the callback."""

    def __init__(
        self,
        spec: HistorySpec,
        clients: list[GatewayClient],
        rss: Callable[[], int],
        say: Say,
    ) -> None:
        self.spec = spec
        self.clients = clients
        self.rss = rss
        self.say = say
        self.prefix = f"h{secrets.token_hex(3)}-"  # extIDs are idempotency keys: unique
        self.sent = self.acked = self.outstanding = 0
        self.failures: Counter[str] = Counter()
        self.every = max(1, spec.operations // SAMPLES)
        self.samples: list[tuple[int, float, float | None]] = []  # (acked, seconds, RSS MB)
        self.rss_mb: dict[str, float | None] = {}
        self.done = asyncio.get_running_loop().create_future()
        self.started = self.last_ack = time.perf_counter()
        self.seconds = 0.0

    async def run(self) -> None:
        self.rss_mb["start"] = mb(self.rss())
        self.samples.append((0, 0.0, self.rss_mb["start"]))
        self.started = self.last_ack = time.perf_counter()
        for client in self.clients:
            callback = self._callback(client)
            for _ in range(self.spec.inflight):
                if not self._send(client, callback):
                    break
        while not self.done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.done), 1.0)
            if not self.done.done() and time.perf_counter() - self.last_ack > self.spec.stall_s:
                self.failures["client/STALLED"] += self.outstanding
                for client in self.clients:  # their callbacks then see ConnectionError
                    client.close()
                break
        self.seconds = time.perf_counter() - self.started
        if self.failures:
            raise ScenarioError(
                f"the fill failed after {self.acked:,} acks: "
                + ", ".join(f"{kind} x{n}" for kind, n in self.failures.most_common())
            )

    def _callback(self, client: GatewayClient) -> Callable[[str, Any], None]:
        def answered(_ext_id: str, answer: dict[str, Any] | ConnectionError) -> None:
            self.outstanding -= 1
            if isinstance(answer, ConnectionError):
                self.failures["client/CONNECTION_LOST"] += 1
            elif answer.get("status") != 200:
                self.failures[describe(answer)] += 1
            else:
                self.acked += 1
                self.last_ack = time.perf_counter()
                if self.acked % self.every == 0 or self.acked in (
                    self.spec.half,
                    self.spec.operations,
                ):
                    self._sample()
            if not self.failures:
                self._send(client, answered)
            if self.outstanding == 0 and not self.done.done():
                self.done.set_result(None)

        return answered

    def _send(self, client: GatewayClient, callback: Callable[[str, Any], None]) -> bool:
        if self.sent >= self.spec.operations:
            return False
        i = self.sent
        self.sent += 1
        self.outstanding += 1
        ext_id = f"{self.prefix}{i}"
        data = {
            "login": self.spec.first_login + i % self.spec.accounts,
            "amount": 1 + (i % 100) / 100,  # 1.00 to 1.99
            "comment": COMMENT,
        }
        client.send_frame_cb(encode_request("CreditIn", data, ext_id), ext_id, callback)
        return True

    def _sample(self) -> None:
        now = time.perf_counter() - self.started
        rss = mb(self.rss())
        acked = self.acked
        if acked == self.spec.half:
            self.rss_mb["half"] = rss
        if acked == self.spec.operations:
            self.rss_mb["end"] = rss
        if self.samples[-1][0] == acked:
            return
        last_acked, last_s, _ = self.samples[-1]
        self.samples.append((acked, round(now, 3), rss))
        rate = (acked - last_acked) / (now - last_s) if now > last_s else 0.0
        self.say(
            f"history fill: {acked:,} / {self.spec.operations:,} acked, "
            f"{rate:,.0f}/s (since the last line), gateway RSS {rss} MB"
        )

    def result(self) -> dict[str, Any]:
        return {
            "operations": self.spec.operations,
            "acked": self.acked,
            "seconds": round(self.seconds, 1),
            "ops_per_s": round(self.acked / self.seconds, 1) if self.seconds else None,
            "rss_mb": self.rss_mb,
            "rss_samples": [
                {"acked": acked, "s": s, "rss_mb": rss} for acked, s, rss in self.samples
            ],
        }


def loaded_at_start(log_path: Path) -> dict[str, Any]:
    """What the last start in the log read from the ledger (its `main_loop_started` line:
    accounts, records, idempotency_keys, next_order); {} when there is none."""
    found: dict[str, Any] = {}
    with log_path.open("rb") as log:
        for line in log:
            if b'"main_loop_started"' in line:
                with contextlib.suppress(orjson.JSONDecodeError):
                    found = orjson.loads(line)
    return {key: found[key] for key in ("accounts", "records", "idempotency_keys") if key in found}


def batch_stats(log_path: Path, offset: int = 0) -> dict[str, Any] | None:
    """The gateway's `batch_committed` lines from `offset` on: how many batches, their size, the
    commit's time and the rest of each batch's time (look-up, apply, publish, announce)."""
    sizes: list[int] = []
    commit_ms: list[float] = []
    other_ms: list[float] = []
    with log_path.open("rb") as log:
        log.seek(offset)
        for line in log:
            if b'"batch_committed"' not in line:
                continue
            try:
                entry = orjson.loads(line)
                size, commit, total = (
                    int(entry["operations"]),
                    float(entry["commit_ms"]),
                    float(entry["total_ms"]),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            sizes.append(size)
            commit_ms.append(commit)
            other_ms.append(total - commit)
    if not sizes:
        return None
    operations = sum(sizes)
    commit_ms.sort()
    return {
        "batches": len(sizes),
        "operations": operations,
        "mean_operations": round(operations / len(sizes), 1),
        "commit_ms_p50": round(percentile(commit_ms, 50) or 0.0, 3),
        "commit_ms_p99": round(percentile(commit_ms, 99) or 0.0, 3),
        "commit_us_per_operation": round(sum(commit_ms) * 1000 / operations, 1),
        # total_ms - commit_ms: the ledger look-up, applying, publishing and announcing
        "other_us_per_operation": round(sum(other_ms) * 1000 / operations, 1),
    }


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def history_text(result: dict[str, Any]) -> str:
    """The phase in a few lines: memory, restart, throughput."""
    fill, restart, throughput = result["fill"], result["restart"], result["throughput"]
    runs = ", ".join(f"{run['design']} {run['rps']:,.0f}" for run in throughput["runs"])
    return (
        f"history: {fill['acked']:,} CreditIn in {fill['seconds']:g} s "
        f"({fill['ops_per_s']:,.0f}/s); gateway RSS {result['rss_start_mb']} -> "
        f"{result['rss_half_mb']} -> {result['rss_end_mb']} MB (growth over the second half "
        f"{result['rss_growth_mb']} MB); restart to listening {restart['start_s']:g} s; "
        f"CreditInSync ok/s {runs}: windowed / in-memory medians {throughput['ratio']}"
    )
