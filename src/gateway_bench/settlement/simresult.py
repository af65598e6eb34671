"""What a simulation measured (`SimulationResult`), its counts (`Tally`), its summary for a
person, and the live progress bar."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any

from ..histogram import LatencyHistogram
from ..progress import ProgressBar
from .simspec import SimulationSpec

PROBLEM_EXAMPLES = 5


@dataclass
class Tally:
    """Counts for one window of the run (the warm-up, or the measured part)."""

    sent: int = 0
    answered: int = 0  # adjustments that got an HTTP answer, whatever it said
    confirmed: int = 0  # ... answered `0`
    over_budget: int = 0  # answered later than the platform's timeout after their send time
    cancel_attempts: int = 0
    cancels_unanswered: int = 0  # cancel attempts that got no HTTP answer (retried)
    slowest_answer_s: float = 0.0  # the longest any adjustment or cancel took to be answered
    slowest_tm_ms: int | None = None  # ... as the server timed it (the envelopes' `tm`)
    outcomes: Counter[str] = field(default_factory=Counter)  # code, http/NNN or client/KIND
    cancels: Counter[str] = field(default_factory=Counter)  # final code or "unresolved"
    problems: Counter[str] = field(default_factory=Counter)  # contract violations by kind
    examples: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems[text.partition(":")[0]] += 1
        if len(self.examples) < PROBLEM_EXAMPLES:
            self.examples.append(text)

    def answered_after(self, seconds: float, tm_ms: int | None) -> None:
        """An adjustment or a cancel attempt was answered (whatever it said) after `seconds`,
        `tm_ms` by the server's own clock."""
        self.slowest_answer_s = max(self.slowest_answer_s, seconds)
        if tm_ms is not None:
            self.slowest_tm_ms = max(self.slowest_tm_ms or 0, tm_ms)

    @property
    def timeouts(self) -> int:
        return self.outcomes["client/TIMEOUT"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "confirmed": self.confirmed,
            "outcomes": dict(sorted(self.outcomes.items())),
            "cancels": dict(sorted(self.cancels.items())),
            "cancel_attempts": self.cancel_attempts,
            "cancels_unanswered": self.cancels_unanswered,
            "slowest_answer_ms": round(self.slowest_answer_s * 1000, 3),
            "slowest_tm_ms": self.slowest_tm_ms,
            "problems": dict(sorted(self.problems.items())),
        }


@dataclass(frozen=True)
class WalletCheck:
    """One wallet at the end: what the confirmed answers imply against what it holds."""

    login: int
    start: Decimal
    expected: Decimal
    actual: Decimal
    unresolved: tuple[str, ...]  # adjustments whose cancel never got a final answer

    @property
    def matches(self) -> bool:
        return self.actual == self.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "login": self.login,
            "start": str(self.start),
            "expected": str(self.expected),
            "actual": str(self.actual),
            "difference": str(self.actual - self.expected),
            "unresolved": list(self.unresolved),
        }


@dataclass
class SimulationResult:
    """The measured window's figures (latencies in ms, None when nothing was answered) and the
    end-of-run comparison of every wallet."""

    spec: SimulationSpec
    duration_s: float
    measured: Tally
    warmup: Tally
    histogram: LatencyHistogram
    timeline: list[dict[str, Any]]
    wallets: list[WalletCheck]
    loop: str = "asyncio"

    @property
    def adjustments_per_s(self) -> float:
        return round(self.measured.answered / self.duration_s, 1)

    @property
    def confirmed_per_s(self) -> float:
        return round(self.measured.confirmed / self.duration_s, 1)

    @property
    def mismatches(self) -> list[WalletCheck]:
        """Wallets that differ from their confirmed adjustments (unresolved ones aside: a cancel
        that never got a final answer leaves the wallet undetermined, not wrong)."""
        return [w for w in self.wallets if not w.matches and not w.unresolved]

    @property
    def unresolved(self) -> list[WalletCheck]:
        return [w for w in self.wallets if w.unresolved]

    @property
    def failed(self) -> bool:
        """A wallet that differs, or one the run could not settle: money cannot be trusted."""
        return bool(self.mismatches or self.unresolved)

    def to_dict(self) -> dict[str, Any]:
        latency = self.histogram.summary()
        measured = self.measured
        return {
            "adjustments": measured.sent,
            "duration_s": self.duration_s,
            "adjustments_per_s": self.adjustments_per_s,
            "confirmed_per_s": self.confirmed_per_s,
            **measured.to_dict(),
            "timeouts": measured.timeouts,
            "budget_ms": self.spec.timeout_s * 1000,
            "over_budget": measured.over_budget,
            "latency_ms": {
                key.removesuffix("_ms"): latency[key]
                for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
            },
            "problem_examples": measured.examples,
            "wallets": len(self.wallets),
            "mismatches": [w.to_dict() for w in self.mismatches],
            "unresolved": [w.to_dict() for w in self.unresolved],
            "failed": self.failed,
            "timeline": self.timeline,
            "warmup": self.warmup.to_dict(),
            "loop": self.loop,
            "histogram_hdr": self.histogram.encode(),
            "spec": self.spec.public(),
        }

    def summary(self) -> str:
        """A few lines for a person."""
        spec, measured = self.spec, self.measured
        mode = (
            f"closed loop, {spec.concurrency} in flight"
            if spec.closed_loop
            else f"open loop at {spec.rate:g}/s"
        )
        lat = self.histogram.summary()
        latency = (
            "  ".join(f"{name} {lat[f'{name}_ms']:.2f}" for name in ("p50", "p90", "p99", "max"))
            if lat["count"]
            else "no answers"
        )
        lines = [
            f"{measured.sent} adjustments over {len(self.wallets)} wallets in "
            f"{self.duration_s:.2f} s ({mode}): {self.adjustments_per_s:.1f} answered/s, "
            f"{self.confirmed_per_s:.1f} confirmed/s",
            f"latency ms: {latency}  (budget {spec.timeout_s * 1000:.0f} ms; "
            f"{measured.timeouts} timeouts, {measured.over_budget} answered past it)",
            "outcomes: " + _counts(measured.outcomes),
            f"cancels: {_counts(measured.cancels)} ({measured.cancel_attempts} attempts)",
        ]
        if measured.problems:
            lines.append(f"contract problems: {_counts(measured.problems)}")
        mismatches, unresolved = self.mismatches, self.unresolved
        lines.append(
            f"wallets: {len(self.wallets) - len(mismatches) - len(unresolved)} match, "
            f"{len(mismatches)} mismatch, {len(unresolved)} unresolved"
        )
        for wallet in mismatches[:5]:
            lines.append(
                f"  login {wallet.login}: expected {wallet.expected}, holds {wallet.actual} "
                f"(difference {wallet.actual - wallet.expected})"
            )
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key} x{value}" for key, value in sorted(counter.items())) or "none"


class Progress:
    """A tqdm bar of answered adjustments, updated once per timeline interval."""

    def __init__(self, spec: SimulationSpec, stream: IO[str]) -> None:
        self.bar = ProgressBar(
            stream, spec.requests, spec.warmup_s, label="settle", unit="answered"
        )

    def update(self, stats: dict[str, Any], tally: Tally) -> None:
        p99 = "-" if stats["p99_ms"] is None else f"{stats['p99_ms']:.1f}"
        self.bar.update(
            tally.answered,
            f"{stats['answers'] / stats['duration_s']:.0f}/s, p99 {p99} ms, "
            f"timeouts {tally.timeouts}, cancels {sum(tally.cancels.values())}",
        )

    def close(self, tally: Tally) -> None:
        self.bar.close(tally.answered, relabel=False)
