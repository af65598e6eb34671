"""In-memory account state: the committed view readers see, and the overlay a batch writes into.

Readers (GetAccountByLogin, GetTradeByOrder, ...) only ever see committed state: a batch's changes
live in a `Transaction` overlay until its commit is durable, then `State.apply` publishes them. A
failed commit just drops the overlay, so nothing half-applied is ever visible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from .records import Account, FinanceRecord
from .storage import Batch, Snapshot

if TYPE_CHECKING:
    from .operations import Operation


@dataclass(slots=True)
class KeyEntry:
    """An idempotency key held in memory; `followers` are duplicates waiting for its commit."""

    command: str
    digest: str
    outcome_json: bytes
    created_at: float
    order: int | None
    event_type: int | None
    committed: bool
    followers: list[Operation] = field(default_factory=list)


class State:
    """Committed accounts, current finance records and idempotency keys."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.accounts: dict[int, Account] = snapshot.accounts
        # Orders grow monotonically and dicts keep insertion order, so iterating backwards is
        # newest first without sorting.
        self.records: dict[int, FinanceRecord] = snapshot.records
        self.orders_by_login: dict[int, list[int]] = {}
        for order, record in self.records.items():
            self.orders_by_login.setdefault(record.login, []).append(order)
        self.keys: dict[tuple[str, str], KeyEntry] = {
            (k.subject, k.ext_id): KeyEntry(
                k.command, k.digest, k.outcome_json, k.created_at,
                orjson.loads(k.outcome_json).get("order"), None, committed=True,
            )
            for k in snapshot.keys
        }
        self.next_order = snapshot.next_order
        self.next_login = snapshot.next_login

    def apply(self, tx: Transaction) -> None:
        """Publish a durably committed transaction."""
        self.accounts.update(tx.accounts)
        for record in tx.batch.records:
            if record.order not in self.records:
                self.orders_by_login.setdefault(record.login, []).append(record.order)
            self.records[record.order] = record
        for key in tx.batch.expired_keys:
            self.keys.pop(key, None)
        for entry in tx.new_keys:
            entry.committed = True
        self.next_order, self.next_login = tx.batch.next_order, tx.batch.next_login

    def find_records(
        self,
        match: Callable[[FinanceRecord], bool],
        login: int | None,
    ) -> Iterator[FinanceRecord]:
        """Current records, newest first, that `match` accepts (optionally of one login)."""
        orders = (
            reversed(self.orders_by_login.get(login, [])) if login is not None
            else reversed(self.records)
        )
        for order in orders:
            record = self.records[order]
            if match(record):
                yield record


class Transaction:
    """One batch's pending changes on top of the committed `State`."""

    def __init__(self, state: State) -> None:
        self._state = state
        self.accounts: dict[int, Account] = {}
        self.records: dict[int, FinanceRecord] = {}
        self.new_keys: list[KeyEntry] = []
        self.batch = Batch(
            accounts=self.accounts, next_order=state.next_order, next_login=state.next_login
        )

    def account(self, login: int) -> Account | None:
        return self.accounts.get(login) or self._state.accounts.get(login)

    def record(self, order: int) -> FinanceRecord | None:
        return self.records.get(order) or self._state.records.get(order)

    def put_account(self, account: Account) -> None:
        self.accounts[account.login] = account

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
