"""What a run measured (`LoadResult`), its human summary, and the live progress bar."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .checks import AnswerChecker
from .histogram import LatencyHistogram
from .progress import ProgressBar
from .spec import LoadSpec

if TYPE_CHECKING:
    from .runner import _Run


@dataclass
class LoadResult:
    """Measured-window figures; latencies in ms, None when nothing was answered."""

    spec: LoadSpec
    requests: int  # measured requests sent
    ok: int
    errors: dict[str, int]  # "status/code" -> count, client-side failures as "client/..."
    mismatches: int
    mismatch_fields: dict[str, int]
    mismatch_examples: list[dict[str, Any]]
    orphans: int  # answers nobody waited for, late ones included
    late_answers: int  # orphans that answered a request already counted as client/TIMEOUT
    bad_frames: int
    events_received: int
    duration_s: float
    rps: float  # ok answers per second of the measured window
    histogram: LatencyHistogram
    timeline: list[dict[str, Any]]
    scheduler_lag: dict[str, Any] | None  # open loop: how late the scheduler sent, in ms
    ledger: dict[int, dict[str, float]]  # login -> balance / credit moved by ok answers
    warmup: dict[str, Any] = field(default_factory=dict)
    loop: str = "asyncio"

    @classmethod
    def build(cls, run: _Run, duration_s: float) -> LoadResult:
        clients = [conn.client for conn in run.conns]
        checker = run.checker
        return cls(
            spec=run.spec,
            requests=run.measured_sent,
            ok=checker.ok,
            errors=dict(checker.errors),
            mismatches=checker.mismatches,
            mismatch_fields=dict(checker.mismatch_fields),
            mismatch_examples=list(checker.examples),
            orphans=sum(c.orphans for c in clients),
            late_answers=run.late_answers,
            bad_frames=sum(c.bad_frames for c in clients),
            events_received=sum(c.events_received for c in clients),
            duration_s=round(duration_s, 3),
            rps=round(checker.ok / duration_s, 1),
            histogram=run.timeline.total,
            timeline=run.timeline.intervals,
            scheduler_lag=None if run.closed_loop else run.scheduler_lag.summary(),
            ledger={
                login: {kind: cents / 100 for kind, cents in moved.items()}
                for login, moved in sorted(run.ledger.items())
            },
            warmup=_warmup(run.warmup_checker),
            loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    @property
    def failed(self) -> bool:
        """Any error or mismatch: the run's answers cannot all be trusted."""
        return bool(self.errors) or self.mismatches > 0

    def to_dict(self) -> dict[str, Any]:
        latency = self.histogram.summary()
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "mismatch_fields": self.mismatch_fields,
            "mismatch_examples": self.mismatch_examples,
            "orphans": self.orphans,
            "late_answers": self.late_answers,
            "bad_frames": self.bad_frames,
            "events_received": self.events_received,
            "duration_s": self.duration_s,
            "rps": self.rps,
            **{
                key: latency[key]
                for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms", "min_ms")
            },
            "answers": latency["count"],
            "clamped": latency["clamped"],
            "timeline": self.timeline,
            "scheduler_lag": self.scheduler_lag,
            "ledger": {str(login): moved for login, moved in self.ledger.items()},
            "warmup": self.warmup,
            "loop": self.loop,
            "histogram_hdr": self.histogram.encode(),
            "spec": self.spec.public(),
        }

    def summary(self) -> str:
        """A few lines for a person."""
        spec = self.spec
        mode = (
            f"closed loop, {spec.inflight} in flight each"
            if spec.closed_loop
            else f"open loop at {spec.rate:g}/s"
        )
        lat = self.histogram.summary()
        lines = [
            f"{self.requests} requests in {self.duration_s:.2f} s over {spec.connections} "
            f"connections ({mode}): {self.ok} ok, {self.rps:.1f} ok/s",
            "latency ms: "
            + (
                "no answers"
                if not lat["count"]
                else "  ".join(
                    f"{name} {lat[key]:.3f}"
                    for name, key in (
                        ("p50", "p50_ms"),
                        ("p90", "p90_ms"),
                        ("p99", "p99_ms"),
                        ("p99.9", "p999_ms"),
                        ("max", "max_ms"),
                        ("mean", "mean_ms"),
                    )
                )
            ),
            "errors: " + (", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items())) or "none"),
            f"mismatches: {self.mismatches}"
            + (
                " (" + ", ".join(f"{k} x{v}" for k, v in self.mismatch_fields.items()) + ")"
                if self.mismatches
                else ""
            ),
            f"orphans: {self.orphans} (late {self.late_answers})  "
            f"events received: {self.events_received}",
        ]
        if self.mismatch_examples:
            lines.append(f"first mismatch: {self.mismatch_examples[0]['reason']}")
        if self.scheduler_lag and self.scheduler_lag["count"]:
            lag = self.scheduler_lag
            lines.append(
                f"scheduler lag ms: p50 {lag['p50_ms']:.3f}  p99 {lag['p99_ms']:.3f}  "
                f"max {lag['max_ms']:.3f}"
            )
        if lat["clamped"]:
            lines.append(f"latencies over 60 s, recorded as 60 s: {lat['clamped']}")
        return "\n".join(lines)


def _warmup(checker: AnswerChecker) -> dict[str, Any]:
    return {"ok": checker.ok, "errors": dict(checker.errors), "mismatches": checker.mismatches}


class Progress:
    """A tqdm bar of ok answers, updated once per timeline interval with rate and p99."""

    def __init__(self, spec: LoadSpec, stream: IO[str]) -> None:
        self.bar = ProgressBar(stream, spec.requests, spec.warmup_s, label="load", unit="ok")

    def update(self, stats: dict[str, Any], checker: AnswerChecker) -> None:
        """After each timeline interval: the count so far, that interval's rate and p99."""
        p99 = "-" if stats["p99_ms"] is None else f"{stats['p99_ms']:.2f}"
        self.bar.update(
            checker.ok,
            f"{stats['rps']:.0f} ok/s, p99 {p99} ms, errors {checker.error_count}, "
            f"mismatches {checker.mismatches}",
        )

    def close(self, checker: AnswerChecker) -> None:
        self.bar.close(checker.ok)
