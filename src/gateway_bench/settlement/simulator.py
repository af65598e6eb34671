"""The simulator's engine: `run_simulation(SimulationSpec(...))` (the command line is `simulate`).

It first records every wallet's amount (`/get-user-amount`), then sends adjustments closed loop
(`concurrency` in flight) or open loop (`rate`/s, latency counted from each intended send time,
so a stalled server cannot hide behind a slowed sender). Like the platform, it cancels every
adjustment that timed out or was answered with anything but `0`, under the number
`<adjustment>-c`, retrying that same cancel with doubling backoff until it gets a final answer
(`0`, `US_0000001`, `US_0000002`) or runs out of attempts. At the end it reads every wallet again
and compares it with its start plus the movements of its confirmed adjustments (`ledger`).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from decimal import Decimal

from ..histogram import Timeline
from ..runner import SendWindow
from .ledger import Ledger, implied_movement
from .money import parse_amount
from .platform import FINAL_CANCEL_CODES, Adjustment, Cancel, PlatformClient, PlatformError
from .simresult import Progress, SimulationResult, Tally, WalletCheck
from .simspec import AdjustmentSource, SimulationSpec

MAX_BACKOFF_S = 2.0
WALLET_READ_ATTEMPTS = 3  # a lost final read would void the whole run's comparison


class SimulationError(Exception):
    """The run could not start or could not be judged (a wallet that cannot be read)."""


async def run_simulation(spec: SimulationSpec) -> SimulationResult:
    """Run the simulation described by `spec` and return what was measured and found."""
    spec.validate()
    async with PlatformClient(
        spec.url,
        company_id=spec.company_id,
        token=spec.token,
        timeout_s=spec.timeout_s,
        connections=spec.concurrency,
    ) as client:
        start = await read_wallets(client, spec)
        run = _Simulation(spec, client, start)
        await run.execute()
        final = await read_wallets(client, spec)
    wallets = [
        WalletCheck(
            login=login,
            start=amount,
            expected=amount + run.ledger.moved(login),
            actual=final[login][0],
            unresolved=tuple(run.unresolved.get(login, ())),
        )
        for login, (amount, _) in start.items()
    ]
    return SimulationResult(
        spec=spec,
        duration_s=round(max(run.t_finish - run.t_measure, 1e-9), 3),
        measured=run.measured,
        warmup=run.warmup,
        histogram=run.timeline.total,
        timeline=run.timeline.intervals,
        wallets=wallets,
        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
    )


async def read_wallets(
    client: PlatformClient, spec: SimulationSpec
) -> dict[int, tuple[Decimal, int]]:
    """Every wallet's amount and currency digits, read `concurrency` at a time."""
    gate = asyncio.Semaphore(spec.concurrency)

    async def read(login: int) -> tuple[int, tuple[Decimal, int]]:
        async with gate:
            return login, await read_wallet(client, login, f"sim-{login}", spec.currency)

    return dict(await asyncio.gather(*(read(login) for login in spec.logins)))


async def read_wallet(
    client: PlatformClient, login: int, user_name: str, currency: str
) -> tuple[Decimal, int]:
    """One wallet's amount and `amountDigits`; SimulationError when it cannot be read."""
    reason = ""
    for _ in range(WALLET_READ_ATTEMPTS):
        try:
            answer = await client.balance(login, user_name, currency)
        except PlatformError as exc:
            reason = str(exc)
            continue
        if not answer.ok:
            reason = f"answered {answer.outcome}: {answer.msg}"
            break  # a refusal will not change on a retry
        try:
            amount = parse_amount(answer.data.get("amount"))
        except ValueError as exc:
            raise SimulationError(f"wallet {login}: {exc}") from exc
        digits = answer.data.get("amountDigits")
        if not isinstance(digits, int) or isinstance(digits, bool):
            raise SimulationError(f"wallet {login}: amountDigits is not an integer: {digits!r}")
        return amount, digits
    raise SimulationError(f"cannot read wallet {login}: {reason}")


class _Simulation(SendWindow):
    """One run's sending, cancelling and counting."""

    def __init__(
        self, spec: SimulationSpec, client: PlatformClient, start: dict[int, tuple[Decimal, int]]
    ) -> None:
        self.spec: SimulationSpec = spec
        self.client = client
        self.source = AdjustmentSource(
            spec, {login: digits for login, (_, digits) in start.items()}
        )
        self.ledger = Ledger()
        self.measured = Tally()
        self.warmup = Tally()
        self.unresolved: dict[int, list[str]] = {}  # login -> adjustments left undetermined
        self.tasks: set[asyncio.Task[None]] = set()
        self.measured_sent = 0
        self.sending_done = False
        self.t_start = self.t_measure = self.t_finish = 0.0
        self.t_end = math.inf
        self.timeline = Timeline(0.0)
        self.progress: Progress | None = None
        self._budget_us = int(spec.timeout_s * 1_000_000)

    async def execute(self) -> None:
        spec = self.spec
        self.t_start = time.perf_counter()
        self.t_measure = self.t_start + spec.warmup_s
        if spec.duration_s is not None:
            self.t_end = self.t_measure + spec.duration_s
        self.timeline = Timeline(self.t_measure)
        if spec.progress:
            self.progress = Progress(spec, sys.stderr)
        ticker = asyncio.create_task(self._tick())
        try:
            if spec.closed_loop:
                await asyncio.gather(*(self._worker() for _ in range(spec.concurrency)))
            else:
                await self._schedule()
                while self.tasks:
                    await asyncio.gather(*list(self.tasks))
        finally:
            ticker.cancel()
            self.t_finish = time.perf_counter()
            self.timeline.finish(self.t_finish)
            if self.progress is not None:
                self.progress.close(self.measured)

    async def _worker(self) -> None:
        while self.may_send(now := time.perf_counter()):
            await self._settle(now, self.count_send(now))

    async def _schedule(self) -> None:
        assert self.spec.rate is not None
        interval, sent = 1.0 / self.spec.rate, 0
        while True:
            due = self.t_start + sent * interval
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if not self.may_send(due):
                return
            task = asyncio.create_task(self._settle(due, self.count_send(due)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            sent += 1

    async def _settle(self, intended: float, measured: bool) -> None:
        """One adjustment as the platform handles it: send, then confirm or cancel."""
        tally = self.measured if measured else self.warmup
        adjustment = self.source.next()
        tally.sent += 1
        try:
            answer = await self.client.adjust(adjustment)
        except PlatformError as exc:
            tally.outcomes[f"client/{exc.kind}"] += 1
            await self._cancel(adjustment, f"no answer: {exc.kind.lower()}", tally)
            return
        latency_us = int((time.perf_counter() - intended) * 1_000_000)
        if measured:
            self.timeline.record_us(latency_us, answer.ok)
        tally.answered += 1
        tally.answered_after(answer.elapsed_s, answer.tm_ms)
        tally.over_budget += latency_us > self._budget_us
        tally.outcomes[answer.outcome] += 1
        for problem in answer.problems:
            tally.problem(problem)
        if not answer.ok:
            await self._cancel(adjustment, f"failure: {answer.outcome}", tally)
            return
        moved, unreadable = implied_movement(answer, adjustment.signed)
        if unreadable is not None:
            tally.problem(unreadable)
        self.ledger.confirm_adjustment(adjustment.login, adjustment.number, moved)
        tally.confirmed += 1

    async def _cancel(self, adjustment: Adjustment, remark: str, tally: Tally) -> None:
        """The platform's cancel, the same number on every retry, until a final answer."""
        cancel = Cancel(adjustment, f"{adjustment.number}-c", remark[:200])
        delay = self.spec.cancel_backoff_s
        for attempt in range(self.spec.cancel_attempts):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
            tally.cancel_attempts += 1
            try:
                answer = await self.client.cancel(cancel)
            except PlatformError:
                tally.cancels_unanswered += 1
                continue
            tally.answered_after(answer.elapsed_s, answer.tm_ms)
            for problem in answer.problems:
                tally.problem(problem)
            if answer.status == 200 and answer.code in FINAL_CANCEL_CODES:
                tally.cancels[answer.outcome] += 1
                if answer.ok:
                    self.ledger.confirm_cancel(adjustment.number)
                return
        tally.cancels["unresolved"] += 1
        self.unresolved.setdefault(adjustment.login, []).append(adjustment.number)

    async def _tick(self) -> None:
        """Close a timeline interval each second and refresh the progress bar."""
        while True:
            await asyncio.sleep(max(self.timeline.next_roll_at - time.perf_counter(), 0.0))
            stats = self.timeline.roll(time.perf_counter())
            if self.progress is not None:
                self.progress.update(stats, self.measured)
