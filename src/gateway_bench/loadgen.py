"""The load generator: `run_load(LoadSpec(...))` as a library, `python -m gateway_bench.loadgen`
(or `tools/loadgen`) from a shell.

    tools/loadgen --port 8080 --token "$TOKEN" --connections 50 --inflight 4 --duration 10 \\
        --mix CreditInSync=3,GetAccountByLogin=1 --create-accounts --out var/loadgen

prints a short summary, writes DIR/loadgen.json and the PNGs, and exits 1 when any answer was an
error or did not match its request, 2 on bad arguments, 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .eventloop import run_on_uvloop
from .result import LoadResult
from .runner import run_load
from .setup import LoadError
from .spec import LOAD_COMMANDS, LoadSpec, parse_mix

__all__ = ["LoadError", "LoadResult", "LoadSpec", "main", "run_load"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _number(minimum: float, inclusive: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        low_ok = value >= minimum if inclusive else value > minimum
        if not low_ok or value != value or value == float("inf"):
            relation = "at least" if inclusive else "more than"
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum:g}, got {text}")
        return value

    return parse


def _mix(text: str) -> dict[str, float]:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadgen", description="Load generator for the manager-API gateway protocol."
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8080)
    add(
        "--token",
        default=os.environ.get("GATEWAY_TOKEN"),
        help="manager JWT, sent once per connection (default: $GATEWAY_TOKEN)",
    )
    add("--connections", type=_positive_int, default=50)
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument(
        "--inflight",
        type=_positive_int,
        default=4,
        help="closed loop: requests outstanding per connection (default 4)",
    )
    loop.add_argument(
        "--rate",
        type=_number(0, inclusive=False),
        help="open loop: total requests/s over all connections",
    )
    stop = parser.add_mutually_exclusive_group(required=True)
    stop.add_argument("--duration", type=_number(0, inclusive=False), help="seconds to measure")
    stop.add_argument("--requests", type=_positive_int, help="measured requests to send")
    add(
        "--warmup",
        type=_number(0, inclusive=True),
        default=0.0,
        help="seconds of unrecorded traffic first",
    )
    add(
        "--mix",
        type=_mix,
        default={"CreditInSync": 1.0},
        help=f"command=weight,... (default CreditInSync); commands: {', '.join(LOAD_COMMANDS)}",
    )
    add("--accounts", type=_positive_int, default=100, help="logins to spread the load over")
    add("--first-login", type=int, default=100_000)
    add("--create-accounts", action="store_true", help="AddUser and fund each login first")
    add("--initial-balance", type=_number(0, inclusive=False), default=1_000_000.0)
    add("--events", action="store_true", help="stay subscribed to trade/balance events")
    add(
        "--timeout",
        type=_number(0, inclusive=False),
        default=10.0,
        help="seconds before an unanswered request counts as an error (default 10)",
    )
    add("--no-progress", action="store_true", help="no progress bar on stderr")
    add("--out", type=Path, help="write DIR/loadgen.json and PNG plots here")
    return parser


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    return LoadSpec(
        host=args.host,
        port=args.port,
        connections=args.connections,
        inflight=args.inflight,
        rate=args.rate,
        duration_s=args.duration,
        requests=args.requests,
        warmup_s=args.warmup,
        mix=args.mix,
        accounts=args.accounts,
        first_login=args.first_login,
        create_accounts=args.create_accounts,
        initial_balance=args.initial_balance,
        token=args.token or None,
        events=args.events,
        progress=not args.no_progress,
        timeout_s=args.timeout,
    )


def write_outputs(result: LoadResult, out: Path, name: str = "loadgen") -> list[Path]:
    """DIR/<name>.json and the plots; returns the files written."""
    from .plot import plot_result  # matplotlib is slow to import: only when plots are wanted

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return [path, *plot_result(result, out, name)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = spec_from_args(args)
    try:
        spec.validate()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        result = run_on_uvloop(run_load(spec))
    except (LoadError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(result.summary())
    if args.out is not None:
        written = write_outputs(result, args.out)
        print("wrote " + ", ".join(str(path) for path in written))
    return EXIT_FAILED if result.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
