"""The platform simulator's command line: `main(argv)` behind `manager-gateway settlement
simulate`, or `python -m gateway_bench.settlement.simulate`; the engine is `simulator`.

    python -m gateway_bench.settlement.simulate --url http://127.0.0.1:8081/api \\
        --currency USD --logins 100000-100099 --concurrency 20 --duration 30 --out var/settle

prints a summary, writes DIR/simulate.json and two PNGs, and exits 1 when a wallet does not hold
what its confirmed adjustments imply (or could not be settled or read), 2 on bad arguments, 0
otherwise. Timeouts and refusals are measured, not failures: the platform cancels them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from ..eventloop import run_on_uvloop
from .platform import PLATFORM_TIMEOUT_S
from .simresult import SimulationResult
from .simspec import DEFAULT_MIX, SimulationSpec, parse_logins, parse_mix
from .simulator import SimulationError, run_simulation

__all__ = ["SimulationError", "SimulationResult", "SimulationSpec", "main", "run_simulation"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, InvalidOperation) as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"bad value {text!r}") from None

    return convert


def _positive(kind: Callable[[str], Any], allow_zero: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not (value >= 0 if allow_zero else value > 0) or value != value:
            raise ValueError(f"must be {'zero or more' if allow_zero else 'positive'}: {text}")
        return value

    return _checked(parse)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manager-gateway settlement simulate",
        description=(
            "Play the trading platform against an External Settlement implementation: send "
            "adjustments over many wallets, cancel every one that times out or fails (as the "
            "platform does), then check that every wallet holds its starting amount plus what "
            "its confirmed adjustments moved."
        ),
    )
    add = parser.add_argument
    add(
        "--url",
        required=True,
        help="base URL the routes hang under, e.g. http://127.0.0.1:8081/api",
    )
    add("--currency", required=True, help="the wallets' currency code, e.g. USD")
    add(
        "--logins",
        type=_checked(parse_logins),
        required=True,
        help="wallet accounts as FIRST-LAST (inclusive) or one login; each must exist",
    )
    add("--company-id", type=int, default=1, help="companyId header (default 1)")
    add(
        "--token",
        default=os.environ.get("GATEWAY_SETTLEMENT_TOKEN"),
        help="bearer token, when the server wants one (default: $GATEWAY_SETTLEMENT_TOKEN)",
    )
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument(
        "--concurrency",
        type=_positive(int),
        default=10,
        help="closed loop: adjustments in flight (default 10); also the connection pool size",
    )
    loop.add_argument(
        "--rate",
        type=_positive(float),
        help="open loop: adjustments/s, latency counted from each intended send time",
    )
    add("--connections", type=_positive(int), help="open loop: connection pool size (default 10)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_positive(float), help="seconds to measure (default 10)")
    stop.add_argument("--requests", type=_positive(int), help="measured adjustments to send")
    add(
        "--warmup",
        type=_positive(float, allow_zero=True),
        default=0.0,
        help="seconds unmeasured first",
    )
    add(
        "--mix",
        type=_checked(parse_mix),
        default=dict(DEFAULT_MIX),
        help="OPERATION=weight,... (default OPEN_POSITION=70,NORMAL_CLOSE=25,"
        "ABNORMAL_OVERTRADING=5); NORMAL_CLOSE amounts are scaled so that closes give back on "
        "average what the others take",
    )
    add(
        "--amount-min",
        type=_positive(Decimal),
        default=Decimal(1),
        help="smallest amount (default 1)",
    )
    add(
        "--amount-max",
        type=_positive(Decimal),
        default=Decimal(100),
        help="largest amount (default 100)",
    )
    add(
        "--timeout",
        type=_positive(float),
        default=PLATFORM_TIMEOUT_S,
        help=f"seconds the platform waits for an answer (default {PLATFORM_TIMEOUT_S:g})",
    )
    add("--cancel-attempts", type=_positive(int), default=5, help="tries per cancel (default 5)")
    add(
        "--cancel-backoff",
        type=_positive(float, allow_zero=True),
        default=0.1,
        help="seconds before a cancel's 2nd try, doubling after (at most 2 s; default 0.1)",
    )
    add("--seed", type=int, default=1, help="seed of the operation and amount draws (default 1)")
    add("--no-progress", action="store_true", help="no progress bar on stderr")
    add(
        "--out",
        type=Path,
        help="write DIR/simulate.json, DIR/simulate-timeline.png and -latency.png",
    )
    return parser


def spec_from_args(args: argparse.Namespace) -> SimulationSpec:
    closed = args.rate is None
    return SimulationSpec(
        url=args.url,
        currency=args.currency,
        logins=args.logins,
        company_id=args.company_id,
        token=args.token or None,
        concurrency=args.concurrency if closed else (args.connections or 10),
        rate=args.rate,
        duration_s=args.duration if args.duration or args.requests else 10.0,
        requests=args.requests,
        warmup_s=args.warmup,
        mix=args.mix,
        amount_min=args.amount_min,
        amount_max=args.amount_max,
        timeout_s=args.timeout,
        cancel_attempts=args.cancel_attempts,
        cancel_backoff_s=args.cancel_backoff,
        seed=args.seed,
        progress=not args.no_progress,
    )


def write_outputs(result: SimulationResult, out: Path, name: str = "simulate") -> list[Path]:
    """DIR/<name>.json and the plots; returns the files written."""
    from .plots import plot_simulation  # matplotlib is slow to import: only when plots are wanted

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return [path, *plot_simulation(result, out, name)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.connections is not None and args.rate is None:
        parser.error("--connections is for the open loop (--rate); closed loop pools --concurrency")
    spec = spec_from_args(args)
    try:
        spec.validate()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        result = run_on_uvloop(run_simulation(spec))
    except (SimulationError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(result.summary())
    if args.out is not None:
        written = write_outputs(result, args.out)
        print("wrote " + ", ".join(str(path) for path in written))
    return EXIT_FAILED if result.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
