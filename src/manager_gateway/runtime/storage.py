"""The ledger seam: what the main loop needs from durable storage, whatever engine is behind it.

The main loop hands over one `Batch` per group commit; `commit` returns only once the batch is
durable, all of it or none of it. `Ledger` is the seam itself, called on the event loop. The
engines live in `ledger/`: SQLite, whose calls block, is written as a `Storage` and run on threads
of its own (`ledger/threaded.py`); PostgreSQL, through asyncpg, implements `Ledger` directly.

History stays in the ledger: the main loop holds the accounts and a window of recent records, keys
and journal rows (`Snapshot` is what it starts from), asks `fetch` once per batch for whatever
older rows that batch needs, and reads for clients go to the ledger too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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


class AccountEvent(NamedTuple):
    """One change of an account, as a shared ledger keeps it for the other nodes (its outbox):
    `version` orders an account's events on every node; `event_type` and `data_json` are the
    `trade:event` it caused (None: a change with no trade event, such as AddUser)."""

    login: int
    version: int
    event_type: int | None
    data_json: bytes | None
    account: Account  # as it is after the change


class PeerEvents(NamedTuple):
    """What a shared ledger's feed hands over: other nodes' events, in (login, version) order,
    or, when `catch_up` is set, nothing yet: the feed (re)connected and may have missed some."""

    events: list[AccountEvent]
    catch_up: bool = False


@dataclass(slots=True)
class Batch:
    """Everything one group commit writes, in one transaction."""

    accounts: dict[int, Account] = field(default_factory=dict)
    records: list[FinanceRecord] = field(default_factory=list)
    keys: list[IdempotencyKey] = field(default_factory=list)
    journal: list[JournalRow] = field(default_factory=list)  # inserted or replaced, in order
    events: list[AccountEvent] = field(default_factory=list)  # shared ledgers only
    # Housekeeping in the same transaction, before the inserts above: keys created at or before
    # `expire_keys_until` are deleted, and so are journal rows created at or before
    # `prune_journal_until` (a row this batch writes again is inserted after, so it stays).
    expire_keys_until: float | None = None
    prune_journal_until: float | None = None
    next_order: int = 1
    next_login: int = 1


@dataclass(slots=True)
class Snapshot:
    """The committed state a main loop starts from: every account, and the newest rows of the
    rest, at most `window` of each."""

    accounts: dict[int, Account]
    records: dict[int, FinanceRecord]  # latest version of the newest orders, oldest first
    keys: list[IdempotencyKey]  # the newest keys, oldest first
    journal: list[JournalRow]  # the newest journal rows, oldest first
    next_order: int
    next_login: int
    # `created_at` of the newest key (journal row) the ledger holds beyond those loaded, 0 when
    # it holds none: until such a row expires, a key missing from memory may be on disk.
    keys_beyond_until: float = 0.0
    journal_beyond_until: float = 0.0


@dataclass(slots=True)
class Lookup:
    """The rows one batch needs that memory may lack, by key; for a shared ledger, everything
    the batch touches, and how many new order and login numbers it may take."""

    keys: list[tuple[str, str]] = field(default_factory=list)
    journal: list[JournalKey] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)
    logins: list[int] = field(default_factory=list)  # shared only: the accounts to lock
    new_orders: int = 0  # shared only
    new_logins: int = 0  # shared only


@dataclass(slots=True)
class Found:
    """What the ledger holds of a `Lookup`; `records` also has the current version of every
    order a found journal row points at (a cancel reverses it). From a shared ledger also the
    accounts, as they are now and locked until the batch ends, and the numbers reserved for it."""

    keys: list[IdempotencyKey]
    journal: list[JournalRow]
    records: list[FinanceRecord]
    accounts: list[Account] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)
    logins: list[int] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class RecordFilter:
    """MngGetTradesByFilter's filters on the current version of each order; `logins` None means
    every login (the session sees every account)."""

    logins: frozenset[int] | None = None
    cmd: int | None = None
    open_from: int | None = None
    open_to: int | None = None
    offset: int = 0
    limit: int = 1000


class Ledger(Protocol):
    """The durable ledger as the main loop uses it. Writes (`load`, `fetch`, `commit`) come one
    at a time, in order; reads of history may run beside them.

    A `shared` ledger has other writers (gateway nodes on one PostgreSQL): memory is then only a
    cache, so the main loop asks `fetch` for everything a batch touches and trusts what it finds,
    and `fetch` begins the batch's transaction, holding what it found locked until `commit` or
    `discard` ends it.
    """

    shared: bool

    async def load(self, window: int) -> Snapshot: ...

    async def fetch(self, lookup: Lookup) -> Found:
        """The rows of `lookup` the ledger holds (read as the writer, so it sees every commit)."""

    async def commit(self, batch: Batch) -> None:
        """Write `batch` durably in one transaction, or raise `StorageError` and write nothing."""

    async def discard(self) -> None:
        """End a batch that `fetch` began and that writes nothing."""

    async def record(self, order: int) -> FinanceRecord | None:
        """The current version of `order`."""

    async def find_records(self, wanted: RecordFilter) -> tuple[list[FinanceRecord], int]:
        """One page of matching current records, newest first, and how many match in all."""

    async def journal_rows(self) -> int:
        """Rows in the settlement journal."""

    def peer_events(self) -> AsyncIterator[PeerEvents]:
        """A shared ledger's feed of the events other nodes commit, for as long as it is open
        (it reconnects by itself); an embedded ledger's ends at once."""

    async def events_after(
        self, known: dict[int, int], others: bool = False
    ) -> tuple[list[AccountEvent], list[Account]]:
        """Every event newer than `known` (login -> last version delivered), and with `others`
        of every account `known` does not name, in (login, version) order; and those accounts
        as they are now, read in the same snapshot (events pruned before a catch-up leave only
        the account to show)."""

    async def close(self) -> None: ...

    def abandon(self) -> None:
        """Give up on a ledger that does not answer (shutdown timed out): drop it without
        waiting for the call in progress, which may or may not complete."""


class HistoryReader(Protocol):
    """A blocking engine's reads of committed history, on threads of its own beside the writer
    (never on the event loop)."""

    def record(self, order: int) -> FinanceRecord | None:
        """The current version of `order`."""

    def find_records(self, wanted: RecordFilter) -> tuple[list[FinanceRecord], int]:
        """One page of matching current records, newest first, and how many match in all."""

    def journal_rows(self) -> int:
        """Rows in the settlement journal."""

    def close(self) -> None: ...


class Storage(Protocol):
    """A ledger engine whose calls block, run behind `Ledger` by `ledger/threaded.py`. Called
    from one thread at a time (the writer thread)."""

    def load(self, window: int) -> Snapshot: ...

    def fetch(self, lookup: Lookup) -> Found:
        """The rows of `lookup` the ledger holds (read by the writer, so it sees every commit)."""

    def commit(self, batch: Batch) -> None:
        """Write `batch` durably in one transaction, or raise and write nothing."""

    def reader(self) -> HistoryReader:
        """A reader for client queries; safe to use from any thread."""

    def close(self) -> None: ...


class StorageError(Exception):
    """The ledger could not durably write or read (disk full, locked, I/O error).

    `maybe_committed`: the connection to a database server was lost while it committed, so the
    batch may be durable after all; callers are told to retry to find out."""

    def __init__(self, message: str, *, maybe_committed: bool = False) -> None:
        super().__init__(message)
        self.maybe_committed = maybe_committed
