"""The ledger seam: what the main loop needs from durable storage, whatever engine is behind it.

The main loop hands over one `Batch` per group commit; `commit` returns only once the batch is
durable, all of it or none of it. SQLite is the embedded default (`sqlite_ledger`); a PostgreSQL
implementation only has to satisfy `Storage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from .journal import JournalKey, JournalRow
from .records import Account, FinanceRecord


class IdempotencyKey(NamedTuple):
    """A state-changing request's key and the outcome a retry of it is answered with (a
    NamedTuple: one is built per operation, and a frozen dataclass costs three times as much)."""

    subject: str
    ext_id: str
    command: str
    digest: str
    outcome_json: bytes  # encoded once: compact in memory, written to the ledger as it is
    created_at: float


@dataclass(slots=True)
class Batch:
    """Everything one group commit writes, in one transaction."""

    accounts: dict[int, Account] = field(default_factory=dict)
    records: list[FinanceRecord] = field(default_factory=list)
    keys: list[IdempotencyKey] = field(default_factory=list)
    expired_keys: list[tuple[str, str]] = field(default_factory=list)
    journal: list[JournalRow] = field(default_factory=list)  # inserted or replaced, in order
    pruned_journal: list[JournalKey] = field(default_factory=list)
    next_order: int = 1
    next_login: int = 1


@dataclass(slots=True)
class Snapshot:
    """The committed state a main loop starts from."""

    accounts: dict[int, Account]
    records: dict[int, FinanceRecord]  # latest version of each order
    keys: list[IdempotencyKey]  # oldest first
    journal: list[JournalRow]  # oldest first
    next_order: int
    next_login: int


class Storage(Protocol):
    """Durable ledger. Called from one thread at a time (the main loop's commit thread)."""

    def load(self) -> Snapshot: ...

    def commit(self, batch: Batch) -> None:
        """Write `batch` durably in one transaction, or raise and write nothing."""

    def close(self) -> None: ...


class StorageError(Exception):
    """The ledger could not durably write or read (disk full, locked, I/O error)."""
