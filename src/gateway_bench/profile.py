"""`tools/profile [--duration S] [--out DIR]`: where the gateway's time goes under load.

Starts a gateway on a fresh data dir (durable commits, as in the benchmark), drives it with the
benchmark's command path (`CreditInSync`, 50 connections x 4 in flight over 100 accounts, event
channels off) and samples it meanwhile with py-spy. `--gil` sampling is the default: only the
thread holding the GIL is recorded, so the shares add up to what one core can do, which is what
bounds a CPython server. DIR gets py-spy's collapsed stacks (`profile.txt`, which any flame
graph tool or speedscope.app reads) and `profile-summary.txt`, the top functions by own time and
by time including callees; the summary is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from .loadgen import LoadSpec, run_load
from .processes import ROOT, GatewayProcess, start_gateway

TOP = 40


def parse_stacks(lines: Iterable[str]) -> tuple[int, Counter[str], Counter[str]]:
    """py-spy's raw (collapsed) format, one `frame;frame;... count` per line: the total sample
    count, samples per innermost frame (own time) and per function anywhere on the stack
    (inclusive time, counted once per stack even when recursive)."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for function in {_function(frame) for frame in frames}:
            inclusive[function] += samples
    return total, own, inclusive


def _function(frame: str) -> str:
    """`name (path:line)` without the line: a function's samples summed over its lines."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summary(total: int, own: Counter[str], inclusive: Counter[str], top: int = TOP) -> str:
    if not total:
        return "no samples (was the gateway busy? is py-spy allowed to attach?)\n"
    lines = [f"{total} samples"]
    for title, counts in (
        ("own time (innermost frame)", own),
        ("inclusive time (anywhere on the stack)", inclusive),
    ):
        lines.append(f"-- {title}")
        lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in counts.most_common(top)]
    return "\n".join(lines) + "\n"


async def _drive(gateway: GatewayProcess, duration_s: float, out: Path, gil: bool) -> str:
    token = await asyncio.to_thread(gateway.mint_token)
    base = LoadSpec(
        host=gateway.host,
        port=gateway.port,
        token=token,
        connections=50,
        inflight=4,
        accounts=100,
        progress=False,
    )
    await run_load(replace(base, requests=200, duration_s=None, create_accounts=True))
    raw = out / "profile.txt"
    command = [
        _py_spy(),
        "record",
        "--pid",
        str(gateway.pid),
        "--duration",
        str(int(duration_s)),
        "--rate",
        "250",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(raw),
    ]
    if gil:
        command.append("--gil")
    spy = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL)
    result = await run_load(replace(base, duration_s=duration_s + 2))
    await spy.wait()
    if spy.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed (exit {spy.returncode}); it needs ptrace permission")
    with raw.open() as stacks:
        text = summary(*parse_stacks(stacks))
    (out / "profile-summary.txt").write_text(text)
    figures = result.to_dict()
    return (
        f"load: {figures['rps']:.0f} ok/s, p50 {figures['p50_ms']} ms, "
        f"p99 {figures['p99_ms']} ms\n{text}"
    )


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: tools/profile installs it (the profile extra)")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/profile", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds sampled")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("var/profile"),
        help="output dir (default var/profile, which git ignores)",
    )
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread, not only the one holding the GIL",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.duration < 3:
        build_parser().error("--duration must be at least 3 seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    gateway = start_gateway(data / "data", args.out / "gateway.log", {"ledger_synchronous": "FULL"})
    try:
        print(asyncio.run(_drive(gateway, args.duration, args.out, not args.all_threads)))
    finally:
        gateway.stop()
        shutil.rmtree(data, ignore_errors=True)
    print(f"raw stacks and summary in {args.out} (repository {ROOT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
