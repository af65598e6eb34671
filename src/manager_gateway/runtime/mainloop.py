"""The single writer: takes operations in arrival order, applies a batch, commits it, announces it.

One task owns the node's account state. Each turn it drains what is queued (up to `max_batch`),
applies each operation to a `Transaction` overlay (a rejection goes straight back to its caller),
writes the batch to the ledger in one durable transaction, and only then publishes the new state,
answers the callers and emits `trade:event` / `balance:event` in operation order.

Idempotency (docs/protocol.md section 7) is decided here too, because only the single writer can
tell "already applied", "being applied in this batch" and "new" apart without races.

Memory holds the accounts and a window of recent history (state.py). Before applying a batch, the
loop asks the ledger in one read for the older rows the batch needs (keys of retries, records an
update or delete names, settlement journal rows), so applying stays a pure in-memory step, and a
batch of new keys costs no read at all while no live key has left the window.

A shared ledger (several nodes on PostgreSQL) has other writers, so memory is only a cache there:
each batch asks for everything it touches, which the ledger returns locked until the commit, each
change of an account gets the account's next version, and the sessions hear the events through
`peers.py`, in version order with the other nodes' (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

import orjson
import structlog

from ..clock import Clock
from ..config import GroupConfig
from ..protocol.errors import GatewayError, IdempotencyMismatch, InternalError, ShuttingDown
from ..waiters import WaiterRegistry
from .operations import Effect, Operation, OpKind, apply_add_user, apply_delete, apply_finance
from .peers import AccountEvents
from .records import Account, FinanceRecord
from .state import KeyEntry, State, Transaction
from .storage import (
    AccountEvent,
    Found,
    IdempotencyKey,
    Ledger,
    Lookup,
    RecordFilter,
    StorageError,
)

#: A 500 for a commit whose outcome the database could not confirm (see StorageError).
UNKNOWN_OUTCOME = (
    "the connection to the ledger was lost while committing: the operation may or may not be"
    " applied; retry it with the same extID to find out"
)

log = structlog.get_logger("manager_gateway.mainloop")


class EventSink(Protocol):
    """Where committed changes are announced (the server's fan-out to sessions)."""

    def trade_event(self, event_type: int, account: Account, data_json: bytes) -> None: ...

    def balance_event(self, account: Account) -> None: ...


class BatchObserver(Protocol):
    """Told of every ledger commit (the server's metrics)."""

    def batch_committed(self, operations: int, commit_s: float) -> None: ...

    def commit_failed(self) -> None: ...


class MainLoop:
    def __init__(
        self,
        ledger: Ledger,
        waiters: WaiterRegistry,
        sink: EventSink,
        clock: Clock,
        groups: dict[str, GroupConfig],
        idempotency_ttl_s: int,
        max_batch: int = 4096,
        journal_retention_s: float = 120 * 86400,
        observer: BatchObserver | None = None,
        window: int = 50_000,
    ) -> None:
        self._observer = observer
        self._ledger = ledger
        self._waiters = waiters
        self._sink = sink
        self._clock = clock
        self._groups = groups
        self._ttl_s = idempotency_ttl_s
        self._journal_retention_s = journal_retention_s
        self._max_batch = max_batch
        self._window = window
        # Submitted, not yet taken into a batch. A plain list and a wake-up future instead of an
        # asyncio.Queue: one append per operation, one swap per batch (the Queue's per-item
        # put/get machinery cost ~1 us per operation).
        self._queue: list[Operation] = []
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._peers: asyncio.Task[None] | None = None  # a shared ledger's other nodes' events
        self._closing = False
        self.events: AccountEvents
        self.state: State

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        snapshot = await self._ledger.load(self._window)
        self.state = State(snapshot, self._window)
        self.events = AccountEvents(self.state, self._sink, self._ledger)
        if self._ledger.shared:
            self._peers = asyncio.create_task(self.events.follow(), name="peer-events")
        self._task = asyncio.create_task(self._run(), name="main-loop")
        log.info(
            "main_loop_started",
            accounts=len(self.state.accounts),
            records=self.state.record_count,
            idempotency_keys=self.state.key_count,
            next_order=self.state.next_order,
        )

    async def stop(self, timeout_s: float | None = None) -> bool:
        """Refuse new operations, finish every queued one, then close the ledger; True when all
        of that happened.

        False when the ledger did not finish within `timeout_s` (a hung disk, a write lock held
        by another process): what was being committed or still queued is then answered
        `ShuttingDown`, and the ledger is left as it is for the process's exit to drop. Such a
        commit may or may not have reached the disk, as with a crash; a retry under the same
        extID after the restart is answered from its key if it did, and applied if it did not.
        """
        if self._task is None:
            return True
        self._closing = True
        self._wake_up()
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            self._task.cancel()  # _process answers its batch; the ledger call stays stuck
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            for op in self._queue:
                self._reject(op, ShuttingDown())
            _tell_decided(self._queue)
            log.error("ledger_abandoned", timeout_s=timeout_s, queued=len(self._queue))
            self._queue.clear()
            await self._stop_peers()
            self._ledger.abandon()
            return False
        self._task = None
        await self._stop_peers()
        await self._ledger.close()
        return True

    async def _stop_peers(self) -> None:
        if self._peers is not None:
            self._peers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._peers
            self._peers = None

    def submit(self, op: Operation) -> None:
        if self._closing:
            raise ShuttingDown()
        self._queue.append(op)
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    @property
    def queue_depth(self) -> int:
        """Operations submitted and not yet taken into a batch."""
        return len(self._queue)

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return  # everything submitted before `_closing` was set is processed
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                continue
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                await self._process(batch)
            finally:  # committed, refused or abandoned: every operation of it is decided now
                _tell_decided(batch)
                self.state.trim()  # also after a batch of retries only, which fetched rows
            # Not held while waiting for the next wake-up: the last batch's operations (their
            # data, waiters and answers) would stay alive until then, up to max_batch of them.
            del batch

    async def _process(self, ops: list[Operation]) -> None:
        if not ops:
            return
        started = time.perf_counter()
        now = self._clock.wall()
        lookup = self._lookup(ops, now)
        if lookup is not None:
            try:
                found = await self._ledger.fetch(lookup)
            except asyncio.CancelledError:  # stop() gave up on a ledger that does not answer
                for op in ops:
                    self._reject(op, ShuttingDown())
                raise
            except Exception as exc:  # nothing is decided without the rows: refuse the batch
                log.error("ledger_read_failed", error=str(exc), operations=len(ops))
                for op in ops:
                    self._reject(
                        op, InternalError("the ledger could not be read; nothing was applied")
                    )
                return
            self.state.remember(found, self._ledger.shared)
        else:
            found = None
        await self._apply_and_commit(ops, found, now, started)
        if found is not None and self._ledger.shared:
            await self._ledger.discard()  # the batch wrote nothing (after a commit: a no-op)

    async def _apply_and_commit(
        self, ops: list[Operation], found: Found | None, now: float, started: float
    ) -> None:
        tx = Transaction(self.state, found if self._ledger.shared else None)
        applied: list[tuple[Operation, Effect]] = []
        for op in ops:
            try:
                effect = self._apply(tx, op, now)
            except GatewayError as error:
                self._reject(op, error)
                log.debug(
                    "operation_rejected",
                    command=op.command,
                    ext_id=op.key[1],
                    error=error.code,
                    message=error.message,
                )
                continue
            except Exception:
                log.exception("operation_failed", command=op.command, ext_id=op.key[1])
                self._reject(op, InternalError())
                continue
            if effect is not None:
                if self._ledger.shared and effect.account is not None:
                    _stamp(tx, effect)
                applied.append((op, effect))
        if not applied:
            return
        self._expire_keys(tx, now)
        commit_started = time.perf_counter()
        try:
            await self._ledger.commit(tx.batch)
        except asyncio.CancelledError:  # stop() gave up on a ledger that does not finish
            self._abandon(applied, ShuttingDown())
            raise
        except Exception as exc:
            log.error("ledger_commit_failed", error=str(exc), operations=len(applied))
            if self._observer is not None:
                self._observer.commit_failed()
            if isinstance(exc, StorageError) and exc.maybe_committed:
                self._abandon(applied, InternalError(UNKNOWN_OUTCOME))
            else:
                self._abandon(applied)
            return
        commit_ms = (time.perf_counter() - commit_started) * 1000
        if self._observer is not None:
            self._observer.batch_committed(len(applied), commit_ms / 1000)
        self.state.apply(tx, newer_only=self._ledger.shared)
        if self._ledger.shared:
            self.events.own([effect.event for _, effect in applied if effect.event is not None])
        for op, effect in applied:
            try:
                self._announce(op, effect)
            except Exception:  # committed already: one bad announcement must not stop the writer
                log.exception("announce_failed", command=op.command, ext_id=op.key[1])
        # One line per batch, not per request: batches grow with load, so this stays cheap.
        log.info(
            "batch_committed",
            operations=len(ops),
            applied=len(applied),
            commit_ms=round(commit_ms, 3),
            total_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _lookup(self, ops: list[Operation], now: float) -> Lookup | None:
        """What the batch needs from the ledger that memory may lack; None when nothing."""
        if self._ledger.shared:
            return _everything_touched(ops)
        state = self.state
        keys_on_disk = state.keys_on_disk(now - self._ttl_s)
        journal_on_disk = state.journal_on_disk(now - self._journal_retention_s)
        keys: dict[tuple[str, str], None] = {}
        journal: dict[tuple[int, str, str], None] = {}
        orders: dict[int, None] = {}
        for op in ops:
            if keys_on_disk and op.decide is None and state.key(op.key) is None:
                keys[op.key] = None
            for journal_key in op.journal_keys:
                row = state.journal.get(journal_key)
                if row is None:
                    if journal_on_disk:
                        journal[journal_key] = None
                elif row.finance_order is not None:  # a cancel reverses its record
                    orders[row.finance_order] = None
            if op.kind is OpKind.FINANCE or op.kind is OpKind.DELETE:
                order = op.data.order  # an update or a delete names its record
                if order is not None:
                    orders[order] = None
        wanted = [o for o in orders if o < state.next_order and state.record(o) is None]
        if not (keys or journal or wanted):
            return None
        return Lookup(list(keys), list(journal), wanted)

    def _apply(self, tx: Transaction, op: Operation, now: float) -> Effect | None:
        """Apply `op` to `tx`; None when it is a retry answered from its key."""
        if op.decide is not None:
            effect = op.decide(tx, op, now)
            if effect.durable:
                self._settle(op, effect.outcome)
                return None
            return effect
        entry = self.state.key(op.key)
        if entry is not None and entry.created_at + self._ttl_s > now:
            if entry.command != op.command or entry.digest != op.digest:
                raise IdempotencyMismatch()
            self._follow(entry, op)
            return None
        seconds = int(now)
        if op.kind is OpKind.FINANCE:
            effect = apply_finance(tx, op, seconds)
        elif op.kind is OpKind.DELETE:
            effect = apply_delete(tx, op, seconds)
        else:
            effect = apply_add_user(tx, op, seconds, self._groups)
        order = effect.record.order if effect.record is not None else None
        # A plain int, not the IntEnum member: the stored key must hold only untracked values.
        event_type = int(effect.event_type) if effect.event_type is not None else None
        # Kept for the key's lifetime: copy it to its exact size, since orjson's own result
        # holds a 4 KiB buffer (measured: 4.1 KB of RSS per key instead of 350 B).
        outcome_json = bytes(memoryview(orjson.dumps(effect.outcome)))
        self.state.put_key(
            op.key, KeyEntry(op.command, op.digest, outcome_json, now, order, event_type)
        )
        self.state.uncommitted[op.key] = []
        tx.batch.keys.append(
            IdempotencyKey(op.key[0], op.key[1], op.command, op.digest, outcome_json, now)
        )
        if op.waiter is not None and effect.record is not None and effect.event_type is not None:
            self._waiters.bind(op.waiter, effect.record.order, effect.event_type)
        return effect

    def _follow(self, entry: KeyEntry, op: Operation) -> None:
        """A retry of an applied operation: same outcome, nothing applied again."""
        followers = self.state.uncommitted.get(op.key)
        if followers is not None:
            followers.append(op)
            if op.waiter is not None and entry.order is not None and entry.event_type is not None:
                self._waiters.bind(op.waiter, entry.order, entry.event_type)
            return
        self._settle(op, orjson.loads(entry.outcome_json))

    def _settle(self, op: Operation, outcome: dict[str, Any]) -> None:
        """Answer a caller with a committed outcome (not through an event)."""
        if op.future is not None and not op.future.done():
            op.future.set_result(outcome[op.answer])
        if op.waiter is not None:
            record = outcome.get("record")
            if record is None:  # a Sync retry of a key that was made by a non-Sync command
                self._waiters.reject(op.waiter, IdempotencyMismatch())
            else:
                self._waiters.resolve(op.waiter, orjson.dumps(record))

    def _reject(self, op: Operation, error: GatewayError) -> None:
        if op.future is not None and not op.future.done():
            op.future.set_exception(error)
        if op.waiter is not None:
            self._waiters.reject(op.waiter, error)

    def _abandon(
        self, applied: list[tuple[Operation, Effect]], error: GatewayError | None = None
    ) -> None:
        """The commit failed (or was given up on): the batch's transaction is not published;
        its keys go, its callers are told `error`."""
        if error is None:
            error = InternalError("the ledger could not record the operation; nothing was applied")
        for op, _ in applied:
            self.state.drop_key(op.key)
            for follower in self.state.uncommitted.pop(op.key, ()):
                self._reject(follower, error)
            self._reject(op, error)

    def _announce(self, op: Operation, effect: Effect) -> None:
        followers = self.state.uncommitted.pop(op.key, ())
        if op.future is not None and not op.future.done():
            op.future.set_result(effect.outcome[op.answer])
        for follower in followers:
            if follower.future is not None and not follower.future.done():
                follower.future.set_result(effect.outcome[follower.answer])
        record = effect.record
        if effect.event is not None:  # a shared ledger: sessions hear it through AccountEvents
            data_json = effect.event.data_json
            if record is not None and effect.event_type is not None and data_json is not None:
                self._waiters.on_trade_event(effect.event_type, record.order, data_json)
        elif record is not None and effect.event_type is not None and effect.account is not None:
            data_json = orjson.dumps(effect.outcome["record"])
            self._waiters.on_trade_event(effect.event_type, record.order, data_json)
            self._sink.trade_event(effect.event_type, effect.account, data_json)
            self._sink.balance_event(effect.account)

    def _expire_keys(self, tx: Transaction, now: float) -> None:
        """Keys past the TTL and journal rows past retention go in this batch's transaction."""
        tx.batch.expire_keys_until = now - self._ttl_s
        tx.batch.prune_journal_until = now - self._journal_retention_s

    # -- reads (committed state only) --------------------------------------------------------

    def account(self, login: int) -> Account | None:
        return self.state.accounts.get(login)

    async def record(self, order: int) -> FinanceRecord | None:
        """The current version of `order`: from the window, else from the ledger."""
        if self._ledger.shared:  # another node may have changed it, or made it
            return await self._ledger.record(order)
        record = self.state.record(order)
        if record is not None or order >= self.state.next_order:
            return record
        return await self._ledger.record(order)

    async def find_records(self, wanted: RecordFilter) -> tuple[list[FinanceRecord], int]:
        """A page of current records, newest first, and the count of all that match."""
        return await self._ledger.find_records(wanted)

    async def journal_rows(self) -> int:
        """Rows in the settlement journal (a gauge)."""
        return await self._ledger.journal_rows()


def _stamp(tx: Transaction, effect: Effect) -> None:
    """Give a shared ledger's change of an account its next version, and its outbox row."""
    assert effect.account is not None
    account = effect.account._replace(version=effect.account.version + 1)
    tx.put_account(account)
    effect.account = account
    data_json = None
    if effect.record is not None and effect.event_type is not None:
        data_json = orjson.dumps(effect.outcome["record"])
    effect.event = AccountEvent(
        account.login, account.version, effect.event_type, data_json, account
    )
    tx.batch.events.append(effect.event)


def _everything_touched(ops: list[Operation]) -> Lookup:
    """A shared ledger's look-up: every key, journal row, record and account the batch may read
    or change (the ledger adds the accounts of the records and rows it finds), and how many new
    numbers it may take."""
    keys: dict[tuple[str, str], None] = {}
    journal: dict[tuple[int, str, str], None] = {}
    orders: dict[int, None] = {}
    logins: dict[int, None] = {}
    new_orders = new_logins = 0
    for op in ops:
        if op.decide is None:
            keys[op.key] = None
        for journal_key in op.journal_keys:
            journal[journal_key] = None
        login = getattr(op.data, "login", None)  # finance, AddUser and settlement data name one
        if login is not None:
            logins[login] = None
        if op.kind is OpKind.FINANCE or op.kind is OpKind.DELETE:
            order = op.data.order  # an update or a delete names its record
            if order is not None:
                orders[order] = None
        if op.kind is OpKind.FINANCE or op.kind is OpKind.SETTLEMENT:
            new_orders += 1  # at most one new record each (an unknown order makes one too)
        elif op.kind is OpKind.ADD_USER and login is None:  # the login left to the gateway
            new_logins += 1
    return Lookup(list(keys), list(journal), list(orders), list(logins), new_orders, new_logins)


def _tell_decided(ops: list[Operation]) -> None:
    for op in ops:
        if op.decided is not None:
            op.decided()
