"""`tools/bench [--quick] --out DIR`: the gateway's benchmark, in one run, written to DIR.

1. A gateway on a fresh temporary data dir (durable commits, `ledger_synchronous=FULL`):
   `CreditInSync` at 50 connections x 4 in flight over 100 accounts, then at 1 x 1.
2. tools/baseline_server.py under the same generator and settings: the ceiling.
3. Event fan-out, idle sessions and pending Sync (`fanout.py`, `idle.py`, `pending.py`), each
   on a gateway of its own so one scenario's memory and state do not colour the next.
4. External Settlement (`settlement_phase.py`): the platform simulator closed loop against a
   gateway's HTTP listener, as long as the CreditInSync 50x4 run; then again with the ledger
   locked from outside for a few seconds half-way through (`settlement-fault`).
5. PostgreSQL (`postgres_phase.py`): the CreditInSync 50x4 load on SQLite, then on a throwaway
   PostgreSQL with one node and two, over the load's accounts and on one hot account.
6. History on disk (`history_phase.py`), only when asked for (`--phase history`: it takes long,
   see BENCHMARKS.md): 2,000,000 `CreditIn` (`--history-operations`) over 1,000 accounts, the
   gateway's memory at half and at the end, a timed restart on that ledger, and `CreditInSync`
   50x4 against the windowed gateway and the in-memory design, interleaved.

`--phase` names the phases to run (default: all but history), `--skip` takes some out of those.

Load connections turn their event channels off (docs/protocol.md section 5), so gateway and baseline
each write one answer frame per request. DIR gets results.json (headline figures, machine,
settings, every run's full result, the scenarios and each target judged), the load generator's
plots per run, the bench's own charts, and each server's log. Targets are reported, not
enforced: the exit code is 0 when the bench ran, even if a target was missed; 1 when a phase
failed (the rest still run and results.json is still written); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .eventloop import run_on_uvloop
from .fanout import FanoutSpec
from .history_phase import HistorySpec
from .idle import IdleSpec
from .pending import PendingSpec
from .phases import DEFAULT_PHASES, PHASES, Bench, BenchOptions
from .report import summary_table
from .settlement_phase import FaultSpec, SettlementSpec

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
REFERENCE_S = 3.0  # each of the settlement phase's reference runs (CPU per request)


@dataclass(frozen=True)
class Profile:
    duration_s: float  # each load run's measured time
    warmup_s: float
    fanout_duration_s: float
    fanout_warmup_s: float
    fault_duration_s: float  # the settlement-fault run, the ledger's lock held in its middle


PROFILES = {
    "full": Profile(
        duration_s=60.0,
        warmup_s=10.0,
        fanout_duration_s=60.0,
        fanout_warmup_s=5.0,
        fault_duration_s=20.0,
    ),
    "quick": Profile(
        duration_s=15.0,
        warmup_s=3.0,
        fanout_duration_s=10.0,
        fanout_warmup_s=2.0,
        fault_duration_s=10.0,
    ),
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
        prog="bench",
        description="Benchmark the manager-API gateway against the baseline.",
    )
    add = parser.add_argument
    add("--out", type=Path, required=True, help="directory for results.json, plots and logs")
    add(
        "--quick",
        action="store_true",
        help="15 s per load run and shorter scenarios (under five minutes in all)",
    )
    add("--duration", type=_positive(float), help="seconds measured per load run")
    add("--warmup", type=float, help="seconds of unrecorded load before each run")
    add("--connections", type=_positive(int), default=50)
    add("--inflight", type=_positive(int), default=4)
    add(
        "--accounts",
        type=_positive(int),
        default=100,
        help="logins the load spreads over, in every phase (default 100)",
    )
    add(
        "--phase",
        type=_phases,
        default=frozenset(DEFAULT_PHASES),
        help=f"comma-separated phases to run: {','.join(PHASES)} (default: all but history)",
    )
    add(
        "--skip",
        type=_phases,
        default=frozenset(),
        help="comma-separated phases to leave out of those --phase names",
    )
    add(
        "--fanout-rate",
        type=_positive(float),
        default=FanoutSpec.rate,
        help="writer operations/s in the fan-out scenario (2 events each per listener)",
    )
    add("--fanout-listeners", type=_positive(int), default=FanoutSpec.listeners)
    add("--idle-connections", type=_positive(int), default=IdleSpec.connections)
    add("--pending-requests", type=_positive(int), default=PendingSpec.requests)
    add(
        "--pending-timeout-ms",
        type=_positive(int),
        default=PendingSpec.sync_timeout_ms,
        help="the pending scenario gateway's sync_timeout_ms",
    )
    add(
        "--settlement-concurrency",
        type=_positive(int),
        default=SettlementSpec.concurrency,
        help="platform requests in flight in the settlement phase (default 50)",
    )
    add(
        "--fault-hold",
        type=_positive(float),
        default=FaultSpec.hold_s,
        help="seconds the settlement-fault phase holds the ledger's lock (default 4)",
    )
    add(
        "--fault-budget-ms",
        type=_positive(int),
        default=FaultSpec.answer_budget_ms,
        help="the settlement-fault gateway's settlement_answer_budget_ms (default 2500)",
    )
    add(
        "--history-operations",
        type=_positive(int),
        default=HistorySpec.operations,
        help="CreditIn the history phase fills its ledger with (default 2,000,000)",
    )
    add(
        "--history-accounts",
        type=_positive(int),
        default=HistorySpec.accounts,
        help="accounts the history phase's fill spreads over (default 1,000)",
    )
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
    fault = FaultSpec(
        accounts=args.accounts,
        # As long as the profile says, shorter with --duration, never under twice the hold.
        duration_s=max(min(profile.fault_duration_s, duration), 2 * args.fault_hold),
        hold_s=args.fault_hold,
        answer_budget_ms=args.fault_budget_ms,
    )
    fault.validate()
    history = HistorySpec(operations=args.history_operations, accounts=args.history_accounts)
    history.validate()
    return BenchOptions(
        out=args.out,
        mode=mode,
        duration_s=duration,
        warmup_s=warmup,
        connections=args.connections,
        inflight=args.inflight,
        accounts=args.accounts,
        skip=args.skip,
        phases=args.phase,
        fanout=FanoutSpec(
            listeners=args.fanout_listeners,
            rate=args.fanout_rate,
            duration_s=min(profile.fanout_duration_s, duration),
            warmup_s=min(profile.fanout_warmup_s, warmup),
            accounts=args.accounts,
        ),
        idle=IdleSpec(connections=args.idle_connections),
        pending=PendingSpec(
            requests=args.pending_requests,
            connections=pending_connections,
            sync_timeout_ms=args.pending_timeout_ms,
            accounts=args.accounts,
        ),
        settlement=SettlementSpec(
            accounts=args.accounts,
            concurrency=args.settlement_concurrency,
            duration_s=duration,
            warmup_s=warmup,
            reference_s=min(REFERENCE_S, duration),
        ),
        settlement_fault=fault,
        history=history,
        progress=not args.no_progress and sys.stderr.isatty(),
        keep_data=args.keep_data,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    bench = Bench(options)
    results = run_on_uvloop(bench.run())
    written = bench.write(results)
    print()
    print(summary_table(results))
    print(
        f"\nwrote {len(written)} files to {options.out}: results.json, "
        f"{sum(path.suffix == '.png' for path in written)} plots"
    )
    return EXIT_FAILED if results["failures"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
