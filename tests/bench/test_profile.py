"""tools/profile's summary of py-spy's collapsed stacks."""

from __future__ import annotations

import pytest

from gateway_bench.profile import build_parser, main, parse_stacks, summary

STACKS = [
    "run (loop.py:10);handle (conn.py:5);parse (codec.py:7) 6\n",
    "run (loop.py:10);handle (conn.py:6) 3\n",
    "run (loop.py:10);commit (ledger.py:9) 1\n",
    "\n",
    "garbage line\n",
]


def test_parse_stacks_counts_own_and_inclusive_time() -> None:
    """Own time goes to the innermost frame (per line); inclusive time to every function on
    the stack, lines of one function merged."""
    total, own, inclusive = parse_stacks(STACKS)
    assert total == 10
    assert own["parse (codec.py:7)"] == 6
    assert own["handle (conn.py:6)"] == 3
    assert inclusive["run (loop.py)"] == 10
    assert inclusive["handle (conn.py)"] == 9
    assert inclusive["commit (ledger.py)"] == 1


def test_recursive_function_counted_once_per_stack() -> None:
    """A function twice on one stack is not counted twice."""
    total, _, inclusive = parse_stacks(["f (a.py:1);f (a.py:2);g (b.py:3) 4\n"])
    assert total == 4
    assert inclusive["f (a.py)"] == 4


def test_summary_shows_shares() -> None:
    """The summary gives each function's share of all samples."""
    text = summary(*parse_stacks(STACKS))
    assert "10 samples" in text
    assert " 60.0%  parse (codec.py:7)" in text
    assert "100.0%  run (loop.py)" in text
    assert "no samples" in summary(0, *parse_stacks([])[1:])


def test_arguments() -> None:
    """Defaults, and a sampling time too short to mean anything is refused."""
    args = build_parser().parse_args([])
    assert (args.duration, args.all_threads) == (15.0, False)
    with pytest.raises(SystemExit) as exited:
        main(["--duration", "1"])
    assert exited.value.code == 2
