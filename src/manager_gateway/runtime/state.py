"""In-memory account state: the committed view readers see, and the overlay a batch writes into.

Readers (GetAccountByLogin, GetTradeByOrder, ...) only ever see committed state: a batch's changes
live in a `Transaction` overlay until its commit is durable, then `State.apply` publishes them. A
failed commit just drops the overlay, so nothing half-applied is ever visible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from .journal import JournalKey, JournalRow
from .records import Account, FinanceRecord
from .storage import Batch, Snapshot

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


class State:
    """Committed accounts, current finance records and idempotency keys."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.accounts: dict[int, Account] = snapshot.accounts
        # Records and keys are held as exact tuples, the one kind of object the garbage collector
        # stops tracking once it has seen that everything inside is atomic (NamedTuples and
        # slotted classes stay tracked). There is one of each per operation, so as tracked
        # objects they made every full collection walk the whole ledger: pauses of 100 ms and
        # more. Reads wrap them back into their NamedTuple on the way out.
        # Orders grow monotonically and dicts keep insertion order, so iterating backwards is
        # newest first without sorting.
        self._records: dict[int, tuple[Any, ...]] = {
            order: tuple(record) for order, record in snapshot.records.items()
        }
        self.orders_by_login: dict[int, list[int]] = {}
        for order, record in snapshot.records.items():
            self.orders_by_login.setdefault(record.login, []).append(order)
        self._keys: dict[tuple[str, str], tuple[Any, ...]] = {
            (k.subject, k.ext_id): (
                k.command,
                k.digest,
                k.outcome_json,
                k.created_at,
                orjson.loads(k.outcome_json).get("order"),
                None,
            )
            for k in snapshot.keys
        }
        # Keys applied in the batch being committed, with the retries that arrived meanwhile and
        # wait for its outcome. A key in `_keys` but not here is committed.
        self.uncommitted: dict[tuple[str, str], list[Operation]] = {}
        # Settlement requests by (company, space, number), oldest first (rows are updated in
        # place when cancelled, which keeps their position).
        self.journal: dict[JournalKey, JournalRow] = {row.key: row for row in snapshot.journal}
        self.next_order = snapshot.next_order
        self.next_login = snapshot.next_login

    def record(self, order: int) -> FinanceRecord | None:
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

    def keys_created_before(self, cutoff: float) -> Iterator[tuple[str, str]]:
        """Keys older than `cutoff`, oldest first."""
        for key, row in self._keys.items():
            if row[3] > cutoff:  # created_at; keys are in time order, so the first live one ends
                return
            yield key

    def apply(self, tx: Transaction) -> None:
        """Publish a durably committed transaction."""
        self.accounts.update(tx.accounts)
        records = self._records
        for record in tx.batch.records:
            if record.order not in records:
                self.orders_by_login.setdefault(record.login, []).append(record.order)
            records[record.order] = tuple(record)
        for key in tx.batch.expired_keys:
            self._keys.pop(key, None)
        for journal_key in tx.batch.pruned_journal:
            self.journal.pop(journal_key, None)
        self.journal.update(tx.journal)
        self.next_order, self.next_login = tx.batch.next_order, tx.batch.next_login

    def journal_created_before(self, cutoff: float) -> Iterator[JournalKey]:
        """Journal rows older than `cutoff`, oldest first."""
        for key, row in self.journal.items():
            if row.created_at > cutoff:
                return
            yield key

    def find_records(
        self,
        match: Callable[[FinanceRecord], bool],
        login: int | None,
    ) -> Iterator[FinanceRecord]:
        """Current records, newest first, that `match` accepts (optionally of one login)."""
        orders = (
            reversed(self.orders_by_login.get(login, []))
            if login is not None
            else reversed(self._records)
        )
        make = FinanceRecord._make
        for order in orders:
            record = make(self._records[order])
            if match(record):
                yield record


class Transaction:
    """One batch's pending changes on top of the committed `State`."""

    def __init__(self, state: State) -> None:
        self._state = state
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
        order = self.batch.next_order
        self.batch.next_order += 1
        return order

    def allocate_login(self) -> int:
        login = self.batch.next_login
        while self.account(login) is not None:
            login += 1
        self.batch.next_login = login + 1
        return login
