"""In-memory state: every account, a window of recent history, and the overlay a batch writes into.

Readers (GetAccountByLogin, GetTradeByOrder, ...) only ever see committed state: a batch's changes
live in a `Transaction` overlay until its commit is durable, then `State.apply` publishes them. A
failed commit just drops the overlay, so nothing half-applied is ever visible.

History lives in the ledger. Memory holds the accounts and at most `window` each of the newest
records, idempotency keys and settlement journal rows, plus the older rows the main loop fetched
for a batch (`remember`); the oldest go first when a window is full. So memory stays flat however
long the ledger grows, and a row missing here may still be on disk: `keys_on_disk` and
`journal_on_disk` say when the main loop must look.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

from .journal import JournalKey, JournalRow
from .records import Account, FinanceRecord
from .storage import Batch, Found, IdempotencyKey, Snapshot

if TYPE_CHECKING:
    from .operations import Operation


class KeyEntry(NamedTuple):
    """An idempotency key held in memory (a NamedTuple of plain values, so the garbage collector
    untracks it: see records.py)."""

    command: str
    digest: str
    outcome_json: bytes
    created_at: float
    order: int | None
    event_type: int | None


def _entry(key: IdempotencyKey) -> tuple[Any, ...]:
    """A key as read from the ledger. It is committed, so its order and event type are never
    needed: they only bind the Sync retries of a key still being committed (`uncommitted`)."""
    return (key.command, key.digest, key.outcome_json, key.created_at, None, None)


class State:
    """Committed accounts, and the window of recent records, keys and journal rows."""

    def __init__(self, snapshot: Snapshot, window: int) -> None:
        self.window = window
        self.accounts: dict[int, Account] = snapshot.accounts
        # Records and keys are held as exact tuples, the one kind of object the garbage collector
        # stops tracking once it has seen that everything inside is atomic (NamedTuples and
        # slotted classes stay tracked): as tracked objects they made every full collection walk
        # them all. Reads wrap them back into their NamedTuple on the way out. Dicts keep
        # insertion order, so the first entries are the oldest, the first to leave the window.
        self._records: dict[int, tuple[Any, ...]] = {
            order: tuple(record) for order, record in snapshot.records.items()
        }
        self._keys: dict[tuple[str, str], tuple[Any, ...]] = {
            (k.subject, k.ext_id): _entry(k) for k in snapshot.keys
        }
        # Keys applied in the batch being committed, with the retries that arrived meanwhile and
        # wait for its outcome. A key in `_keys` but not here is committed.
        self.uncommitted: dict[tuple[str, str], list[Operation]] = {}
        # Settlement requests by (company, space, number), oldest first (rows are updated in
        # place when cancelled, which keeps their position).
        self.journal: dict[JournalKey, JournalRow] = {row.key: row for row in snapshot.journal}
        # Journal rows read back for the batch being applied: dropped again after it, since
        # pruning walks the window from its oldest end and would never reach them there.
        self._fetched_journal: list[JournalKey] = []
        # The newest `created_at` of a key (journal row) the ledger holds and memory does not.
        self.keys_beyond_until = snapshot.keys_beyond_until
        self.journal_beyond_until = snapshot.journal_beyond_until
        self.next_order = snapshot.next_order
        self.next_login = snapshot.next_login

    def record(self, order: int) -> FinanceRecord | None:
        """The current version of `order` if it is in the window (the ledger has the rest)."""
        row = self._records.get(order)
        return None if row is None else FinanceRecord._make(row)

    @property
    def record_count(self) -> int:
        return len(self._records)

    def key(self, key: tuple[str, str]) -> KeyEntry | None:
        row = self._keys.get(key)
        return None if row is None else KeyEntry._make(row)

    def put_key(self, key: tuple[str, str], entry: KeyEntry) -> None:
        """Insert or renew `key` at the newest end (an expired key applied again moves there)."""
        self._keys.pop(key, None)
        self._keys[key] = tuple(entry)

    def drop_key(self, key: tuple[str, str]) -> None:
        self._keys.pop(key, None)

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def keys_on_disk(self, live_after: float) -> bool:
        """May the ledger hold a key created after `live_after` that memory does not?"""
        return self.keys_beyond_until > live_after

    def journal_on_disk(self, live_after: float) -> bool:
        return self.journal_beyond_until > live_after

    def remember(self, found: Found, shared: bool = False) -> None:
        """Hold rows the main loop fetched from the ledger for the batch it is applying. From a
        shared ledger they replace what memory holds: another node may have changed them."""
        for key in found.keys:
            if shared or (key.subject, key.ext_id) not in self._keys:
                self._keys[(key.subject, key.ext_id)] = _entry(key)
        for row in found.journal:
            if row.key not in self.journal:
                self._fetched_journal.append(row.key)
                self.journal[row.key] = row
            elif shared:
                self.journal[row.key] = row
        for record in found.records:
            if shared or record.order not in self._records:
                self._records[record.order] = tuple(record)
        for account in found.accounts:
            self.accounts[account.login] = account

    def apply(self, tx: Transaction, newer_only: bool = False) -> None:
        """Publish a durably committed transaction. `newer_only` (a shared ledger): an account
        is replaced only by a newer version, since another node's may have arrived first."""
        if not newer_only:
            self.accounts.update(tx.accounts)
        else:
            for login, account in tx.accounts.items():
                held = self.accounts.get(login)
                if held is None or held.version < account.version:
                    self.accounts[login] = account
        records = self._records
        for record in tx.batch.records:
            records[record.order] = tuple(record)
        batch = tx.batch
        if batch.expire_keys_until is not None:
            _drop_created_until(self._keys, batch.expire_keys_until, 3)
        if batch.prune_journal_until is not None:
            _drop_created_until(self.journal, batch.prune_journal_until, 13)
        self.journal.update(tx.journal)
        self.next_order, self.next_login = batch.next_order, batch.next_login

    def trim(self) -> None:
        """Forget the oldest rows beyond the window. Called between batches only: rows fetched
        for a batch must stay until it is applied, however many there are."""
        for key in self._fetched_journal:  # the ledger has them, in their latest version
            row = self.journal.pop(key, None)
            if row is not None:
                self.journal_beyond_until = max(self.journal_beyond_until, row.created_at)
        self._fetched_journal.clear()
        window = self.window
        _drop_oldest(self._records, len(self._records) - window)
        for row in _drop_oldest(self._keys, len(self._keys) - window):  # a retry reads the disk
            self.keys_beyond_until = max(self.keys_beyond_until, row[3])
        for row in _drop_oldest(self.journal, len(self.journal) - window):
            self.journal_beyond_until = max(self.journal_beyond_until, row.created_at)


# Both walk the front of the dict once per batch. `next(iter(d))` once per entry would walk the
# slots of every entry deleted before it again each time: measured at 115 to 300 us per
# operation once the window was full.


def _drop_oldest(rows: dict[Any, Any], count: int) -> list[Any]:
    """Remove the `count` oldest entries; their values."""
    if count <= 0:
        return []
    oldest = list(islice(rows, count))
    return [rows.pop(key) for key in oldest]


def _drop_created_until(rows: dict[Any, Any], until: float, at: int) -> None:
    """Drop the oldest entries while their `created_at` (field `at`) is at or before `until`;
    entries fetched back from the ledger may sit out of order behind them, and the main loop
    checks every key's age anyway."""
    expired = []
    for key, row in rows.items():
        if row[at] > until:
            break
        expired.append(key)
    for key in expired:
        del rows[key]


class Transaction:
    """One batch's pending changes on top of the committed `State`."""

    def __init__(self, state: State, reserved: Found | None = None) -> None:
        self._state = state
        # A shared ledger's batch takes new numbers from those its ledger reserved for it (its
        # sequences), else from memory's counters.
        self._orders = None if reserved is None else iter(reserved.orders)
        self._logins = None if reserved is None else iter(reserved.logins)
        self.accounts: dict[int, Account] = {}
        self.records: dict[int, FinanceRecord] = {}
        self.journal: dict[JournalKey, JournalRow] = {}
        self.batch = Batch(
            accounts=self.accounts, next_order=state.next_order, next_login=state.next_login
        )

    def account(self, login: int) -> Account | None:
        return self.accounts.get(login) or self._state.accounts.get(login)

    def record(self, order: int) -> FinanceRecord | None:
        return self.records.get(order) or self._state.record(order)

    def put_account(self, account: Account) -> None:
        self.accounts[account.login] = account

    def journal_row(self, key: JournalKey) -> JournalRow | None:
        return self.journal.get(key) or self._state.journal.get(key)

    def put_journal(self, row: JournalRow) -> None:
        """Insert or replace a journal row, in the same commit as the records of this batch."""
        self.journal[row.key] = row
        self.batch.journal.append(row)

    def put_record(self, record: FinanceRecord) -> None:
        self.records[record.order] = record
        self.batch.records.append(record)

    def reserve_order(self) -> int:
        if self._orders is not None:
            return next(self._orders)  # the main loop reserved one per operation
        order = self.batch.next_order
        self.batch.next_order += 1
        return order

    def allocate_login(self) -> int:
        if self._logins is not None:
            login = next(self._logins)
            while self.account(login) is not None:  # taken by an explicit login
                login = next(self._logins)
            return login
        login = self.batch.next_login
        while self.account(login) is not None:
            login += 1
        self.batch.next_login = login + 1
        return login
