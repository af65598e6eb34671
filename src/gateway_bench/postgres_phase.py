"""The PostgreSQL phase: the same CreditInSync load on SQLite and on PostgreSQL, in one run.

A throwaway PostgreSQL (the `pgserver` wheel, in the bench's data directory; production
durability: fsync and synchronous_commit on) and these runs, each the bench's closed loop
(50 x 4 by default) for the bench's duration:

- `sqlite`: one gateway on its embedded ledger, the reference;
- `pg-1`: one gateway node on PostgreSQL, the load over the bench's accounts (100);
- `pg-2`: two nodes on that database, half the connections on each;
- `pg-hot-1`, `pg-hot-2`: the same on one account, which every batch of every node locks.

Each figure is judged as a ratio to another of the same run (the machine drifts, the ratios do
not): one node to SQLite, two nodes to one, one hot account to the load spread over many. On
this 2-core machine the nodes, the database and the load generator share the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .loadgen import LoadResult, LoadSpec, run_load
from .processes import GatewayProcess, start_gateway
from .sessions import ScenarioError

HOT_LOGIN = 900_000


@dataclass(frozen=True)
class PostgresSpec:
    hot_accounts: int = 1


@contextlib.contextmanager
def throwaway_postgres(data: Path) -> Iterator[str]:
    """A PostgreSQL server in `data` with a `gateway` database, for as long as the block runs;
    its URL."""
    import psycopg
    from pgserver import postgres_server

    server = postgres_server.get_server(data, cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE gateway")
        yield server.get_uri().replace("/postgres?", "/gateway?", 1)
    finally:
        server.cleanup()


def _figures(result: LoadResult) -> dict[str, Any]:
    data = result.to_dict()
    return {
        "rps": data["rps"],
        "p50_ms": data["p50_ms"],
        "p99_ms": data["p99_ms"],
        "errors": sum(data["errors"].values()) + data["mismatches"],
    }


def _combined(results: list[LoadResult]) -> dict[str, Any]:
    """Generators run side by side against different nodes: throughput adds up, the worst
    latency stands for the run."""
    parts = [_figures(result) for result in results]
    return {
        "rps": round(sum(part["rps"] for part in parts), 1),
        "p50_ms": max(part["p50_ms"] or 0 for part in parts),
        "p99_ms": max(part["p99_ms"] or 0 for part in parts),
        "errors": sum(part["errors"] for part in parts),
        "nodes": parts,
    }


def _ratio(top: dict[str, Any] | None, bottom: dict[str, Any] | None) -> float | None:
    if top is None or bottom is None or not bottom["rps"]:
        return None
    return round(float(top["rps"]) / float(bottom["rps"]), 3)


async def run_postgres(
    spec: LoadSpec,
    data: Path,
    out: Path,
    settings: dict[str, str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The runs above; `spec` is the bench's load (port and token are set here)."""
    runs: dict[str, dict[str, Any]] = {}

    async def one(name: str, node: GatewayProcess, load: LoadSpec) -> None:
        token = await asyncio.to_thread(node.mint_token)
        result = await run_load(replace(load, host=node.host, port=node.port, token=token))
        runs[name] = _figures(result)
        say(f"postgres: {name}: {result.summary()}")

    async def split(name: str, nodes: list[GatewayProcess], load: LoadSpec) -> None:
        half = replace(load, connections=max(1, load.connections // len(nodes)))
        tokens = [await asyncio.to_thread(node.mint_token) for node in nodes]
        results = await asyncio.gather(
            *(
                run_load(replace(half, host=node.host, port=node.port, token=token))
                for node, token in zip(nodes, tokens, strict=True)
            )
        )
        runs[name] = _combined(list(results))
        say(f"postgres: {name}: {runs[name]['rps']:,.0f} ok/s over {len(nodes)} nodes")

    def start(name: str, extra: dict[str, str]) -> GatewayProcess:
        return start_gateway(data / name, out / f"gateway-{name}.log", {**settings, **extra})

    sqlite = await asyncio.to_thread(start, "pg-reference-sqlite", {})
    try:
        await one("sqlite", sqlite, replace(spec, create_accounts=True))
    finally:
        await asyncio.to_thread(sqlite.stop)

    hot = replace(spec, accounts=1, first_login=HOT_LOGIN, create_accounts=True)
    with throwaway_postgres(data / "postgres") as url:
        # One secret for both nodes, so one token is good on either.
        shared = {"ledger_url": url, "jwt_secret": "bench-nodes-share-one-secret-32-bytes!"}
        first = await asyncio.to_thread(start, "pg-node-1", shared)
        nodes = [first]
        try:
            await one("pg-1", first, replace(spec, create_accounts=True))
            await one("pg-hot-1", first, hot)
            nodes.append(await asyncio.to_thread(start, "pg-node-2", shared))
            await split("pg-2", nodes, replace(spec, create_accounts=False))
            await split("pg-hot-2", nodes, replace(hot, create_accounts=False))
        finally:
            for node in nodes:
                await asyncio.to_thread(node.stop)
    if not runs:
        raise ScenarioError("no PostgreSQL run completed")
    return {
        "runs": runs,
        "one_node_vs_sqlite": _ratio(runs.get("pg-1"), runs.get("sqlite")),
        "two_nodes_vs_one": _ratio(runs.get("pg-2"), runs.get("pg-1")),
        "hot_vs_spread_one_node": _ratio(runs.get("pg-hot-1"), runs.get("pg-1")),
        "hot_vs_spread_two_nodes": _ratio(runs.get("pg-hot-2"), runs.get("pg-2")),
        "errors": sum(run["errors"] for run in runs.values()),
    }


def postgres_text(result: dict[str, Any]) -> str:
    runs = result["runs"]
    figures = ", ".join(f"{name} {run['rps']:,.0f}" for name, run in runs.items())
    return (
        f"postgres: CreditInSync ok/s {figures}; one node / SQLite "
        f"{result['one_node_vs_sqlite']}, two nodes / one {result['two_nodes_vs_one']}, "
        f"hot / spread {result['hot_vs_spread_one_node']} (one node), "
        f"{result['hot_vs_spread_two_nodes']} (two)"
    )
