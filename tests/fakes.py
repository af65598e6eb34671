"""Test doubles for the seams: a manual clock and a ledger whose commits can be held."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from manager_gateway.ledger.sqlite import SQLiteLedger
from manager_gateway.ledger.threaded import ThreadedLedger
from manager_gateway.runtime.storage import Batch, Found, Ledger, Lookup, Storage


def storage_of(ledger: Ledger) -> Storage:
    """The engine under a gateway's ledger seam (tests put their doubles there)."""
    assert isinstance(ledger, ThreadedLedger)
    return ledger.storage


def threaded(storage: Storage | None) -> Ledger | None:
    """A test's engine behind the seam, as the gateway runs SQLite; None keeps the default."""
    return None if storage is None else ThreadedLedger(storage)


@dataclass(order=True)
class _Timer:
    due: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time moves only when a test calls `advance`; due timers then run in order."""

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self.now = 0.0
        self.wall_offset = wall
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_offset + self.now

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now + delay_s, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._timers and self._timers[0].due <= target:
            timer = heapq.heappop(self._timers)
            self.now = max(self.now, timer.due)
            if not timer.cancelled:
                timer.callback()
        self.now = target

    def pending_timers(self) -> int:
        return sum(1 for timer in self._timers if not timer.cancelled)


class GatedLedger(SQLiteLedger):
    """The real SQLite ledger, but `hold()` makes commits wait until `release()`: a stalled main
    loop, with the operation still reaching the disk once released. `hold_fetches()` makes the
    look-ups wait until `close()`: a disk that stops answering reads."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._open = threading.Event()
        self._open.set()
        self._reads_open = threading.Event()
        self._reads_open.set()
        # The connection, to one call or `close()` at a time: closing it under a running
        # statement (a held call let through by `close()`) crashes SQLite.
        self._in_use = threading.Lock()
        self.commit_started = threading.Event()
        self.fetch_started = threading.Event()
        self.fail_next: Exception | None = None

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def hold_fetches(self) -> None:
        self._reads_open.clear()

    def commit(self, batch: Batch) -> None:
        self.commit_started.set()
        self._open.wait()
        with self._in_use:
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            super().commit(batch)

    def fetch(self, lookup: Lookup) -> Found:
        self.fetch_started.set()
        self._reads_open.wait()
        with self._in_use:
            return super().fetch(lookup)

    def close(self) -> None:
        self._open.set()
        self._reads_open.set()
        with self._in_use:
            super().close()


class FillableLedger(SQLiteLedger):
    """The real SQLite ledger on a disk that can be made full: `fill()` caps the database at its
    current size, so the next commit that needs a page fails with SQLITE_FULL ("database or disk
    is full"), exactly as on a full disk; `make_room()` lifts the cap. Call them between
    commits (the tests do: nothing is in flight then)."""

    def fill(self) -> None:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count = {int(pages)}")

    def make_room(self) -> None:
        self._db.execute("PRAGMA max_page_count = 1073741823")


class TornLedger(SQLiteLedger):
    """The real SQLite ledger whose next commit with a finance record fails half-way: `tear_next()`
    makes it write that batch's first record twice, so SQLite itself refuses the second copy (the
    records' primary key) after the accounts and the first copy were written inside the
    transaction. The failure comes between BEGIN and COMMIT, where only a ROLLBACK undoes it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.torn = 0  # commits that failed half-way
        self._tear = False

    def tear_next(self) -> None:
        self._tear = True

    def commit(self, batch: Batch) -> None:
        if self._tear and batch.records:
            self._tear = False
            self.torn += 1
            batch = replace(batch, records=[*batch.records, batch.records[0]])
        super().commit(batch)
