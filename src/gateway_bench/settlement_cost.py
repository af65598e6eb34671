"""What serving a request costs the gateway over HTTP against over TCP: CPU seconds per request.

The settlement phase runs three short references on its gateway and wallets before the
simulation, each `concurrency` in flight for `duration_s`, bracketed by the gateway process's
CPU seconds:

- `CreditInSync` over TCP (the load generator, `concurrency` x 1): the write the adjustments are
  set against. Its batches are as large as its rate makes them, so its figure and the
  adjustments' differ by the commit's share too, not by the HTTP framework alone.
- `GetAccountByLogin` over TCP and `/get-user-amount` over HTTP: the same read of one account,
  no main loop and no commit in either, so their difference is what the HTTP path (aiohttp,
  the platform's headers, pydantic, the envelope) costs per request against the TCP protocol.
  The HTTP reads come from a plain aiohttp client kept busy enough that the gateway does not
  idle between requests (its CPU per request grows when it does).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from .loadgen import LoadSpec, run_load
from .settlement.platform import BALANCE, balance_body

ReadCpu = Callable[[], float]  # CPU seconds a process has used so far
READ_TIMEOUT_S = 10.0


def cpu_figures(wall: float, server: float, own: float | None, requests: int) -> dict[str, Any]:
    """CPU seconds over a run: the gateway's (`server`) and, when given, this process's."""
    figures: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "server_cpu_s": round(server, 3),
        "requests": requests,
        "server_cpu_ms_per_request": _per_request(server, requests),
    }
    if own is not None:  # the simulator's: when it is the busier one, it set the pace
        figures["generator_cpu_s"] = round(own, 3)
        figures["generator_cpu_ms_per_request"] = _per_request(own, requests)
    return figures


async def reference_runs(
    url: str,
    tcp: tuple[str, int, str],
    logins: range,
    currency: str,
    concurrency: int,
    duration_s: float,
    server_cpu: ReadCpu,
) -> dict[str, dict[str, Any]]:
    """The three references, in turn (`tcp` is the gateway's host, port and a token)."""
    return {
        "credit_in_sync_tcp": await tcp_reference(
            tcp, "CreditInSync", logins, concurrency, duration_s, server_cpu
        ),
        "account_query_tcp": await tcp_reference(
            tcp, "GetAccountByLogin", logins, concurrency, duration_s, server_cpu
        ),
        "amount_query_http": await http_reference(
            url, logins, currency, concurrency, duration_s, server_cpu
        ),
    }


def compare(adjustment_ms: float | None, references: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Adjustments against CreditInSync (x), and the HTTP read against the TCP read (x and the
    difference in ms: the HTTP framework's cost per request)."""
    write = references["credit_in_sync_tcp"]["server_cpu_ms_per_request"]
    http = references["amount_query_http"]["server_cpu_ms_per_request"]
    tcp = references["account_query_tcp"]["server_cpu_ms_per_request"]
    return {
        "adjustment_over_credit_in_sync": _ratio(adjustment_ms, write),
        "http_read_over_tcp_read": _ratio(http, tcp),
        "http_framework_ms_per_request": (
            None if http is None or tcp is None else round(http - tcp, 4)
        ),
    }


async def tcp_reference(
    tcp: tuple[str, int, str],
    command: str,
    logins: range,
    concurrency: int,
    duration_s: float,
    server_cpu: ReadCpu,
) -> dict[str, Any]:
    """`command` over TCP, `concurrency` connections x 1 in flight, over `logins`."""
    host, port, token = tcp
    load = LoadSpec(
        host=host, port=port, connections=concurrency, inflight=1, duration_s=duration_s,
        mix={command: 1.0}, accounts=len(logins), first_login=logins.start, token=token,
        events=False, progress=False,
    )  # fmt: skip
    server, wall = server_cpu(), time.perf_counter()
    result = await run_load(load)
    wall, server = time.perf_counter() - wall, server_cpu() - server
    summary = result.to_dict()
    return {
        "route": f"{command} over TCP",
        "in_flight": concurrency,
        "rps": result.rps,
        "p50_ms": summary["p50_ms"],
        "errors": result.errors,
        **cpu_figures(wall, server, None, result.ok + sum(result.errors.values())),
    }


async def http_reference(
    url: str,
    logins: range,
    currency: str,
    concurrency: int,
    duration_s: float,
    server_cpu: ReadCpu,
) -> dict[str, Any]:
    """`/get-user-amount` over HTTP keep-alive, `concurrency` in flight, over `logins`."""
    bodies = [orjson.dumps(balance_body(login, f"sim-{login}", currency)) for login in logins]
    headers = {"trace": "bench-read", "companyId": "1", "Content-Type": "application/json"}
    outcomes: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker(seq: int) -> None:
            while time.perf_counter() < end:
                body = bodies[seq % len(bodies)]
                seq += concurrency
                try:
                    async with http.post(url + BALANCE, data=body, headers=headers) as response:
                        answer = await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcomes[f"client/{type(exc).__name__}"] += 1
                    continue
                outcomes[_code(response.status, answer)] += 1

        server, wall = server_cpu(), time.perf_counter()
        end = wall + duration_s
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall, server = time.perf_counter() - wall, server_cpu() - server
    ok = outcomes["0"]
    return {
        "route": f"{BALANCE} over HTTP",
        "in_flight": concurrency,
        "rps": round(ok / wall, 1),
        "errors": {code: n for code, n in outcomes.items() if code != "0"},
        **cpu_figures(wall, server, None, outcomes.total()),
    }


def _code(status: int, body: bytes) -> str:
    if status != 200:
        return f"http/{status}"
    try:
        return str(orjson.loads(body).get("code"))
    except (orjson.JSONDecodeError, AttributeError):
        return "bad-envelope"


def _per_request(seconds: float, requests: int) -> float | None:
    return round(seconds * 1000 / requests, 4) if requests else None


def _ratio(over: float | None, under: float | None) -> float | None:
    return None if over is None or not under else round(over / under, 2)
