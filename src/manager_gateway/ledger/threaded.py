"""A blocking ledger engine (SQLite) behind the runtime's async `Ledger` seam.

Writes run on one thread of their own, so the engine's connection is only ever used from one thread
and commits stay in order; client reads of history run on `READ_THREADS` more, beside the writer
(SQLite's WAL lets readers see committed data while a commit is in progress).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..runtime.records import Account, FinanceRecord
from ..runtime.storage import (
    AccountEvent,
    Batch,
    Found,
    HistoryReader,
    Lookup,
    PeerEvents,
    RecordFilter,
    Snapshot,
    Storage,
    StorageError,
)

#: Threads serving client reads of history.
READ_THREADS = 2

T = TypeVar("T")


class ThreadedLedger:
    """`Ledger` over a `Storage`: each call on the right thread, awaited on the event loop."""

    shared = False  # the only writer: memory is the truth between commits

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._readers = ThreadPoolExecutor(
            max_workers=READ_THREADS, thread_name_prefix="ledger-read"
        )
        self._reader: HistoryReader | None = None

    async def _on(self, executor: ThreadPoolExecutor, call: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, call, *args)

    def _history(self) -> HistoryReader:
        if self._reader is None:
            raise StorageError("the ledger is not open")
        return self._reader

    async def load(self, window: int) -> Snapshot:
        snapshot = await self._on(self._writer, self.storage.load, window)
        self._reader = self.storage.reader()
        return snapshot

    async def fetch(self, lookup: Lookup) -> Found:
        return await self._on(self._writer, self.storage.fetch, lookup)

    async def commit(self, batch: Batch) -> None:
        await self._on(self._writer, self.storage.commit, batch)

    async def discard(self) -> None:
        return  # `fetch` began nothing: SQLite reads outside a transaction

    async def record(self, order: int) -> FinanceRecord | None:
        return await self._on(self._readers, self._history().record, order)

    async def find_records(self, wanted: RecordFilter) -> tuple[list[FinanceRecord], int]:
        return await self._on(self._readers, self._history().find_records, wanted)

    async def journal_rows(self) -> int:
        return await self._on(self._readers, self._history().journal_rows)

    async def peer_events(self) -> AsyncIterator[PeerEvents]:
        return  # the only writer: there are no other nodes
        yield  # an async generator that yields nothing

    async def events_after(
        self, known: dict[int, int], others: bool = False
    ) -> tuple[list[AccountEvent], list[Account]]:
        return [], []

    async def close(self) -> None:
        self._readers.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
        await self._on(self._writer, self.storage.close)
        self._writer.shutdown(wait=True)

    def abandon(self) -> None:
        # The writer thread may be stuck in the engine (a hung disk): it is left for the
        # process's exit to drop, and nothing queued behind it runs.
        self._writer.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)
