"""The PostgreSQL ledger, through asyncpg on the event loop, for one gateway node or several.

Several nodes may write at once, so the database decides, never a node's memory
(docs/scaling.md). Each batch is one transaction on the node's writer connection, begun by
`fetch`:

1. transaction-scoped advisory locks on the batch's idempotency keys, settlement numbers and
   named logins, in one statement, in sorted order. A retry of a key another node is still
   committing waits here for that commit, then reads its outcome;
2. the current rows of those keys and numbers, and of the records the batch names;
3. the accounts it touches, `FOR UPDATE` in login order: batches on one account queue, and
   since every batch takes its locks in the same order (advisory, then rows, each sorted), they
   never deadlock;
4. new order and login numbers from sequences.

`commit` then writes set-based (`unnest` upserts, `COPY` for records) and commits. Balances carry
`CHECK (>= 0)` as the last line under the main loop's own checks; money is `numeric`.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
import orjson
import structlog

from ..runtime.journal import JournalRow
from ..runtime.records import Account, FinanceRecord
from ..runtime.storage import (
    AccountEvent,
    Batch,
    Found,
    IdempotencyKey,
    Lookup,
    PeerEvents,
    RecordFilter,
    Snapshot,
    StorageError,
)
from .migrate import migrate_postgres
from .rows import (
    ACCOUNT_COLUMNS,
    CURRENT_VERSION,
    JOURNAL_COLUMNS,
    KEY_COLUMNS,
    RECORD_COLUMNS,
    account_from_row,
    journal_row,
    key_from_row,
    latest_records,
    oldest_first,
    record_from_row,
)

log = structlog.get_logger("manager_gateway.ledger")

#: Connections serving client reads of history, beside the writer's own.
READ_CONNECTIONS = 2
#: Expired keys and journal rows deleted per statement (housekeeping, after a commit).
PURGE_ROWS = 5000
#: How often, in the batches' own time, that housekeeping runs.
PURGE_EVERY_S = 1.0
#: How long the outbox keeps account events for nodes that fell behind (cut off from the
#: database): one that comes back later gets its accounts up to date, not their events.
EVENT_AGE_S = 3600.0
#: The channel each batch's NOTIFY goes to: "<node> <batch>".
CHANNEL = "gateway_account_events"
#: The longest a node waits between attempts to reconnect its listening connection.
RECONNECT_MAX_S = 5.0
#: How long the listening connection may stay quiet before a probe checks that it still
#: answers: a connection lost without a word (a network gone dead, a server process frozen, or
#: a cut asyncpg does not report because it came while LISTEN was being set up) is replaced
#: within about twice this.
LISTEN_PROBE_S = 5.0

# What a connection-level failure looks like: the server went away, the socket broke.
_CONNECTION_ERRORS = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)
_ERRORS = (asyncpg.PostgresError, *_CONNECTION_ERRORS, asyncio.TimeoutError)


_ACCOUNT_TYPES = (
    "bigint[], text[], text[], text[], text[], integer[], integer[], text[], integer[],"
    " numeric[], numeric[], bigint[], bigint[]"
)
# The accounts' columns with their version, which only a shared ledger keeps.
_ACCOUNT_SELECT = ACCOUNT_COLUMNS + ", version"
_EVENT_COLUMNS = "login, version, event_type, data, account"
_JOURNAL_TYPES = (
    "bigint[], text[], text[], text[], text[], text[], bigint[], text[], bigint[], text[],"
    " text[], text[], text[], float8[]"
)


def lock_id(*parts: object) -> int:
    """The advisory lock of one key, number or login: 64 bits of a hash (a collision only makes
    two batches queue that need not)."""
    text = "\0".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


def _unnest(types: str) -> str:
    """`SELECT * FROM unnest($1::t1, $2::t2, ...)` for columns of the given array types."""
    casts = ", ".join(f"${n}::{t.strip()}" for n, t in enumerate(types.split(","), 1))
    return f"SELECT * FROM unnest({casts})"


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Row tuples as one list per column (what `unnest` takes). Never empty: a batch writes a
    table only when it has rows for it."""
    return [list(column) for column in zip(*rows, strict=True)]


def _last_per_key(rows: Iterable[JournalRow]) -> list[JournalRow]:
    """A batch writes a journal row, then may write it again (a cancel in the same batch): one
    statement may touch a row once, and the last version is the one that stands."""
    return list({row.key: row for row in rows}.values())


class PostgresLedger:
    """`Ledger` on PostgreSQL; every call on the event loop."""

    shared = True

    def __init__(self, url: str) -> None:
        self._url = url
        self.node = uuid.uuid4().hex[:12]  # names this node's NOTIFYs, which it skips
        self._closed = False
        self._writer: asyncpg.Connection | None = None
        self._readers: asyncpg.Pool | None = None
        self._tx: Any = None  # the batch's transaction, from `fetch` to `commit` or `discard`
        self._locked: set[int] = set()  # logins that existed when `fetch` locked them
        self._purged_until = 0.0
        # Journal rows this node's committed batches pruned: housekeeping may not have deleted
        # them yet (once a second), and a row fetched again would be decided on as live, so it
        # ends at the same commit as on SQLite. (Keys need no such care: a key's age is checked
        # where a retry is decided.)
        self._journal_pruned_until = 0.0

    # -- connections ----------------------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        """The writer's connection, opened again if the last one broke (a database restart or
        failover: the batch that saw it was answered 500, the next one goes on)."""
        if self._writer is None or self._writer.is_closed():
            try:
                self._writer = await asyncpg.connect(
                    self._url, server_settings=self._settings("writer")
                )
            except _ERRORS as exc:
                raise StorageError(f"cannot connect to the ledger: {exc}") from exc
        return self._writer

    def _settings(self, role: str) -> dict[str, str]:
        """Each connection's name, for pg_stat_activity, and plans made for each statement's
        values: a plan cached while the tables were small (a new ledger) would keep scanning
        them whole as they grow (measured: 1,811 against 3,362 ok/s once the plans were new)."""
        return {
            "application_name": f"gateway-{self.node}-{role}",
            "plan_cache_mode": "force_custom_plan",
        }

    def _broken(self, exc: BaseException) -> None:
        """Drop the writer's connection after a failure that may have left it unusable."""
        if isinstance(exc, _CONNECTION_ERRORS) and self._writer is not None:
            self._writer.terminate()

    def _pool(self) -> asyncpg.Pool:
        if self._readers is None:
            raise StorageError("the ledger is not open")
        return self._readers

    # -- the writer -----------------------------------------------------------------------------

    async def load(self, window: int) -> Snapshot:
        await asyncio.to_thread(migrate_postgres, self._url)
        try:
            return await self._load(window)
        except _ERRORS as exc:
            raise StorageError(f"reading the ledger failed: {exc}") from exc

    async def _load(self, window: int) -> Snapshot:
        db = await self._connection()
        self._readers = await asyncpg.create_pool(
            self._url,
            min_size=1,
            max_size=READ_CONNECTIONS,
            server_settings=self._settings("reader"),
        )
        rows = await db.fetch(f"SELECT {_ACCOUNT_SELECT} FROM accounts")
        accounts = {a.login: a for a in map(account_from_row, rows)}
        newest = int(await db.fetchval("SELECT COALESCE(MAX(ord), 0) FROM records"))
        records = latest_records(
            await db.fetch(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE ord > $1 ORDER BY ord, version",
                newest - window,
            )
        )
        key_rows, keys_beyond_until = await _newest(db, KEY_COLUMNS, "idempotency", window)
        journal_rows, journal_beyond_until = await _newest(
            db, JOURNAL_COLUMNS, "settlement_journal", window
        )
        return Snapshot(
            accounts,
            records,
            [key_from_row(row) for row in key_rows],
            [journal_row(row) for row in journal_rows],
            newest + 1,
            1000,  # unused: a shared ledger hands out logins from its sequence
            keys_beyond_until,
            journal_beyond_until,
        )

    async def fetch(self, lookup: Lookup) -> Found:
        db = await self._connection()
        if self._tx is not None:  # a batch left open by a cancelled caller
            await self.discard()
        self._tx = db.transaction()
        try:
            await self._tx.start()
            return await self._begin_batch(db, lookup)
        except _ERRORS as exc:
            await self.discard()
            self._broken(exc)
            raise StorageError(f"ledger read failed: {exc}") from exc

    async def _begin_batch(self, db: asyncpg.Connection, lookup: Lookup) -> Found:
        locks = {lock_id("key", subject, ext_id) for subject, ext_id in lookup.keys}
        locks.update(lock_id("journal", *key) for key in lookup.journal)
        locks.update(lock_id("login", login) for login in lookup.logins)
        if locks:
            await db.execute(
                "SELECT pg_advisory_xact_lock(id) FROM unnest($1::bigint[]) AS id ORDER BY id",
                sorted(locks),
            )
        keys = [
            key_from_row(row)
            for row in await db.fetch(
                f"SELECT {KEY_COLUMNS} FROM idempotency"
                " WHERE (subject, ext_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [k[0] for k in lookup.keys],
                [k[1] for k in lookup.keys],
            )
        ]
        journal = []
        if lookup.journal:  # settlement requests only
            journal = [
                journal_row(row)
                for row in await db.fetch(
                    f"SELECT {JOURNAL_COLUMNS} FROM settlement_journal"
                    " WHERE (company, space, number) IN"
                    " (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]))"
                    " AND created_at > $4",
                    [k[0] for k in lookup.journal],
                    [k[1] for k in lookup.journal],
                    [k[2] for k in lookup.journal],
                    self._journal_pruned_until,
                )
            ]
        orders = {*lookup.orders, *(r.finance_order for r in journal if r.finance_order)}
        logins = set(lookup.logins)
        logins.update(r.login for r in journal if r.login is not None)
        if orders:  # the order's login never changes: read it before its account is locked
            logins.update(
                await db.fetchval(
                    "SELECT coalesce(array_agg(DISTINCT login), '{}') FROM records"
                    " WHERE ord = ANY($1::bigint[])",
                    sorted(orders),
                )
            )
        accounts = [
            account_from_row(row)
            for row in await db.fetch(
                f"SELECT {_ACCOUNT_SELECT} FROM accounts WHERE login = ANY($1::bigint[])"
                " ORDER BY login FOR UPDATE",
                sorted(logins),
            )
        ]
        self._locked = {a.login for a in accounts}
        records: list[FinanceRecord] = []
        if orders:  # read under the account locks every writer of a record holds
            records = list(
                latest_records(
                    await db.fetch(
                        f"SELECT {RECORD_COLUMNS} FROM records WHERE ord = ANY($1::bigint[])"
                        " ORDER BY ord, version",
                        sorted(orders),
                    )
                ).values()
            )
        return Found(
            keys,
            journal,
            records,
            accounts,
            await _numbers(db, "order_numbers", lookup.new_orders),
            await _free_logins(db, lookup.new_logins),
        )

    async def commit(self, batch: Batch) -> None:
        if self._tx is None:  # the main loop fetches every shared batch: its locks come first
            raise StorageError("ledger commit failed: no batch was begun by fetch")
        db = await self._connection()
        try:
            await self._write(db, batch)
        except _ERRORS as exc:
            await self.discard()
            self._broken(exc)
            raise StorageError(f"ledger commit failed: {exc}") from exc
        tx, self._tx = self._tx, None
        try:
            await tx.commit()
        except _ERRORS as exc:
            self._broken(exc)
            # Lost while committing: PostgreSQL may have committed it. Keys and balances are
            # read back under lock by every batch, so a retry finds out which.
            raise StorageError(
                f"ledger commit failed: {exc}", maybe_committed=isinstance(exc, _CONNECTION_ERRORS)
            ) from exc
        if batch.prune_journal_until is not None:
            self._journal_pruned_until = max(self._journal_pruned_until, batch.prune_journal_until)
        await self._purge(db, batch)

    async def _write(self, db: asyncpg.Connection, batch: Batch) -> None:
        updated = [a for a in batch.accounts.values() if a.login in self._locked]
        created = [a for a in batch.accounts.values() if a.login not in self._locked]
        if updated:
            await db.execute(
                "UPDATE accounts AS a SET grp = n.grp, name = n.name, email = n.email,"
                " password_hash = n.password_hash, leverage = n.leverage, enable = n.enable,"
                " currency = n.currency, digits = n.digits, balance = n.balance,"
                " credit = n.credit, registration_time = n.registration_time,"
                " version = n.version"
                f" FROM ({_unnest(_ACCOUNT_TYPES)}) AS n ({_ACCOUNT_SELECT})"
                " WHERE a.login = n.login",
                *_columns([_account_row(a) for a in updated]),
            )
        if created:  # a login another node took meanwhile fails the batch, never overwrites
            await db.execute(
                f"INSERT INTO accounts ({_ACCOUNT_SELECT}) {_unnest(_ACCOUNT_TYPES)}",
                *_columns([_account_row(a) for a in created]),
            )
        if batch.records:
            await db.copy_records_to_table(
                "records",
                records=[_record_row(r) for r in batch.records],
                columns=RECORD_COLUMNS.split(", "),
            )
        if batch.keys:
            keys = list({(k.subject, k.ext_id): k for k in batch.keys}.values())
            await db.execute(
                f"INSERT INTO idempotency ({KEY_COLUMNS})"
                f" {_unnest('text[], text[], text[], text[], text[], float8[]')}"
                " ON CONFLICT (subject, ext_id) DO UPDATE SET command = EXCLUDED.command,"
                " digest = EXCLUDED.digest, outcome = EXCLUDED.outcome,"
                " created_at = EXCLUDED.created_at",  # the expired key this one replaces
                *_columns([_key_row(k) for k in keys]),
            )
        if batch.events:
            await self._outbox(db, batch.events)
        if batch.journal:
            rows = _last_per_key(batch.journal)
            await db.execute(
                f"INSERT INTO settlement_journal ({JOURNAL_COLUMNS}) {_unnest(_JOURNAL_TYPES)}"
                " ON CONFLICT (company, space, number) DO UPDATE SET"
                + ", ".join(
                    f" {c} = EXCLUDED.{c}" for c in JOURNAL_COLUMNS.replace(" ", "").split(",")[3:]
                ),
                *_columns([(*row[:12], row.answer_json.decode(), row.created_at) for row in rows]),
            )

    async def _outbox(self, db: asyncpg.Connection, events: list[AccountEvent]) -> None:
        """The batch's account events under a new batch number, and one NOTIFY naming it (sent
        at commit), in one statement."""
        await db.execute(
            "WITH batch AS (SELECT nextval('event_batches') AS number),"
            " stored AS (INSERT INTO account_events"
            " (login, version, batch, event_type, data, account)"
            " SELECT e.login, e.version, batch.number, e.event_type, e.data, e.account"
            f" FROM ({_unnest('bigint[], bigint[], integer[], text[], text[]')})"
            " AS e (login, version, event_type, data, account), batch)"
            " SELECT pg_notify($6, $7 || ' ' || number) FROM batch",
            *_columns(
                [
                    (
                        e.login,
                        e.version,
                        e.event_type,
                        None if e.data_json is None else e.data_json.decode(),
                        orjson.dumps(_account_json(e.account)).decode(),
                    )
                    for e in events
                ]
            ),
            CHANNEL,
            self.node,
        )

    async def _purge(self, db: asyncpg.Connection, batch: Batch) -> None:
        """Delete expired keys and journal rows past retention, outside the batch's transaction
        and skipping rows another node holds, so housekeeping never waits on a batch or makes
        one wait. Best effort: what a failure leaves, a later batch deletes."""
        until = batch.expire_keys_until
        if until is None or until < self._purged_until + PURGE_EVERY_S:
            return
        self._purged_until = until
        try:
            await db.execute(_purge_sql("idempotency"), until, PURGE_ROWS)
            if batch.prune_journal_until is not None:
                await db.execute(
                    _purge_sql("settlement_journal"), batch.prune_journal_until, PURGE_ROWS
                )
            await db.execute(
                _purge_sql("account_events"),  # on the database's clock: they carry its time
                await db.fetchval("SELECT extract(epoch FROM now())::float8 - $1", EVENT_AGE_S),
                PURGE_ROWS,
            )
        except _ERRORS as exc:
            self._broken(exc)

    async def discard(self) -> None:
        tx, self._tx = self._tx, None
        if tx is None:
            return
        try:
            await tx.rollback()
        except _ERRORS as exc:  # the connection is gone: so is the transaction
            self._broken(exc)

    # -- history reads ---------------------------------------------------------------------------

    async def record(self, order: int) -> FinanceRecord | None:
        try:
            row = await self._pool().fetchrow(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE ord = $1"
                " ORDER BY version DESC LIMIT 1",
                order,
            )
        except _ERRORS as exc:
            raise StorageError(f"ledger read failed: {exc}") from exc
        return None if row is None else record_from_row(row)

    async def find_records(self, wanted: RecordFilter) -> tuple[list[FinanceRecord], int]:
        where: list[str] = [CURRENT_VERSION]
        params: list[object] = []
        if wanted.logins is not None:
            params.append(sorted(wanted.logins))
            where.append(f"r.login = ANY(${len(params)}::bigint[])")
        if wanted.cmd is not None:
            params.append(wanted.cmd)
            where.append(f"r.cmd = ${len(params)}")
        if wanted.open_from is not None:
            params.append(wanted.open_from)
            where.append(f"r.open_time >= ${len(params)}")
        if wanted.open_to is not None:
            params.append(wanted.open_to)
            where.append(f"r.open_time <= ${len(params)}")
        condition = " AND ".join(where)
        page = len(params) + 1
        try:
            async with self._pool().acquire() as db, _snapshot(db):
                rows = await db.fetch(
                    f"SELECT {RECORD_COLUMNS} FROM records AS r WHERE {condition}"
                    f" ORDER BY r.ord DESC LIMIT ${page} OFFSET ${page + 1}",
                    *params,
                    wanted.limit,
                    wanted.offset,
                )
                count = await db.fetchval(
                    f"SELECT COUNT(*) FROM records AS r WHERE {condition}", *params
                )
        except _ERRORS as exc:
            raise StorageError(f"ledger read failed: {exc}") from exc
        return [record_from_row(row) for row in rows], int(count)

    async def journal_rows(self) -> int:
        try:
            return int(await self._pool().fetchval("SELECT COUNT(*) FROM settlement_journal"))
        except _ERRORS as exc:
            raise StorageError(f"ledger read failed: {exc}") from exc

    # -- other nodes' events ----------------------------------------------------------------------

    async def peer_events(self) -> AsyncIterator[PeerEvents]:
        """LISTEN on a connection of its own; each NOTIFY from another node brings its batch's
        events. After every (re)connect, first a catch-up: what was committed while this node
        was not listening is read from the outbox (`events_after`)."""
        # Any exception, not only asyncpg's documented ones: a cut that meets an operation in
        # progress can raise InternalClientError, and this feed must outlive every connection.
        delay = 0.1
        while not self._closed:
            try:
                listener = await asyncpg.connect(
                    self._url, server_settings=self._settings("events")
                )
            except Exception as exc:
                delay = await _retry_after(delay, error=_reason(exc))
                continue
            listened = False
            try:
                async for events in self._listen(listener):
                    listened, delay = True, 0.1
                    yield events
                log.warning("peer_listener_lost")
            except Exception as exc:
                log.warning("peer_listener_lost", error=_reason(exc))
            finally:
                listener.terminate()
            if not listened:  # lost before it listened: wait, as after a failed connect
                delay = await _retry_after(delay)

    async def _listen(self, listener: asyncpg.Connection) -> AsyncIterator[PeerEvents]:
        """A catch-up, then each other node's batch as its NOTIFY arrives, until the connection
        is lost (or, quiet for LISTEN_PROBE_S, fails its probe)."""
        notes: asyncio.Queue[str | None] = asyncio.Queue()
        listener.add_termination_listener(lambda _: notes.put_nowait(None))
        await listener.add_listener(CHANNEL, lambda *args: notes.put_nowait(args[3]))
        yield PeerEvents([], catch_up=True)
        while True:
            try:  # asyncio.timeout, not wait_for: wait_for can swallow the task's own
                # cancellation when a note arrives with it (Python 3.11), and shutdown then
                # waits for this task forever
                async with asyncio.timeout(LISTEN_PROBE_S):
                    note = await notes.get()
            except TimeoutError:
                await listener.execute("SELECT 1", timeout=LISTEN_PROBE_S)  # or it is lost
                continue
            if note is None:
                return
            node, _, number = note.partition(" ")
            if node == self.node:
                continue
            rows = await listener.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM account_events WHERE batch = $1"
                " ORDER BY login, version",
                int(number),
            )
            yield PeerEvents([_event(row) for row in rows])

    async def events_after(
        self, known: dict[int, int], others: bool = False
    ) -> tuple[list[AccountEvent], list[Account]]:
        join = "LEFT JOIN" if others else "JOIN"
        logins, versions = list(known), list(known.values())
        newer = (
            "WITH k(login, version) AS (SELECT * FROM unnest($1::bigint[], $2::bigint[])),"
            " newer AS (SELECT a.login, coalesce(k.version, 0) AS known FROM accounts AS a"
            f" {join} k ON a.login = k.login WHERE a.version > coalesce(k.version, 0))"
        )
        try:
            async with self._pool().acquire() as db, _snapshot(db):
                rows = await db.fetch(
                    f"{newer} SELECT {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))}"
                    " FROM account_events AS e JOIN newer AS n"
                    " ON e.login = n.login AND e.version > n.known ORDER BY e.login, e.version",
                    logins,
                    versions,
                )
                accounts = await db.fetch(
                    f"{newer} SELECT {_ACCOUNT_SELECT} FROM accounts"
                    " WHERE login IN (SELECT login FROM newer) ORDER BY login",
                    logins,
                    versions,
                )
        except _ERRORS as exc:
            raise StorageError(f"ledger read failed: {exc}") from exc
        return [_event(row) for row in rows], [account_from_row(row) for row in accounts]

    # -- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        await self.discard()
        if self._readers is not None:
            await self._readers.close()
        if self._writer is not None:
            await self._writer.close()

    def abandon(self) -> None:
        self._closed = True
        if self._readers is not None:
            self._readers.terminate()
        if self._writer is not None:
            self._writer.terminate()


def _reason(exc: Exception) -> str:
    """An error for the log: its message, or its kind when it has none (a timeout)."""
    return str(exc) or type(exc).__name__


async def _retry_after(delay: float, **why: str) -> float:
    """Wait `delay` before the listener's next attempt; the delay after that one (doubled, up
    to RECONNECT_MAX_S)."""
    log.warning("peer_listener_unavailable", retry_s=delay, **why)
    await asyncio.sleep(delay)
    return min(delay * 2, RECONNECT_MAX_S)


async def _free_logins(db: asyncpg.Connection, count: int) -> list[int]:
    """`count` logins from the sequence that no account has (an AddUser may name its own login,
    so the sequence can run into one)."""
    free: list[int] = []
    while len(free) < count:
        wanted = await _numbers(db, "login_numbers", count - len(free))
        taken = await db.fetchval(
            "SELECT coalesce(array_agg(login), '{}') FROM accounts WHERE login = ANY($1::bigint[])",
            wanted,
        )
        free.extend(login for login in wanted if login not in set(taken))
    return free


def _snapshot(db: Any) -> Any:
    """One read-only snapshot, so a page and its count see the same commits."""
    return db.transaction(isolation="repeatable_read", readonly=True)


async def _numbers(db: asyncpg.Connection, sequence: str, count: int) -> list[int]:
    if count == 0:
        return []
    rows = await db.fetch(
        f"SELECT nextval('{sequence}') FROM generate_series(1, $1) ORDER BY 1", count
    )
    return [int(row[0]) for row in rows]


async def _newest(
    db: asyncpg.Connection, columns: str, table: str, window: int
) -> tuple[list[tuple[Any, ...]], float]:
    """The newest `window` rows (oldest first) and the `created_at` of the newest left out."""
    rows = await db.fetch(
        f"SELECT {columns} FROM {table} ORDER BY created_at DESC LIMIT $1", window + 1
    )
    return oldest_first([tuple(row) for row in rows], window)


def _purge_sql(table: str) -> str:
    return (
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {table} WHERE created_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))"
    )


def _account_row(a: Account) -> tuple[object, ...]:
    return (
        a.login, a.group, a.name, a.email, a.password_hash, a.leverage, a.enable, a.currency,
        a.digits, a.balance, a.credit, a.registration_time, a.version,
    )  # fmt: skip


def _account_json(a: Account) -> list[object]:
    """An account as its outbox row keeps it: the columns in order, money as decimal text."""
    return [*a[:9], str(a.balance), str(a.credit), a.registration_time, a.version]


def _event(row: Any) -> AccountEvent:
    login, version, event_type, data, account = row
    return AccountEvent(
        int(login),
        int(version),
        None if event_type is None else int(event_type),
        None if data is None else str(data).encode(),
        account_from_row(orjson.loads(account)),
    )


def _record_row(r: FinanceRecord) -> tuple[object, ...]:
    return tuple(r)


def _key_row(k: IdempotencyKey) -> tuple[object, ...]:
    return (k.subject, k.ext_id, k.command, k.digest, k.outcome_json.decode(), k.created_at)
