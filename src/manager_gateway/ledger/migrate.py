"""Versioned schema migrations for both engines, with yoyo-migrations.

Each engine has its own numbered SQL files (`migrations/sqlite/`, `migrations/postgresql/`): the
dialects differ (decimal text against `numeric`, for one). A gateway applies what its ledger lacks
when it starts, and `manager-gateway ledger migrate` does the same without starting. yoyo records
what is applied in the ledger itself (`_yoyo_migration`), and takes a lock row while it migrates,
so several nodes starting together on one PostgreSQL migrate it once. A new migration is a new
file; one already released is never edited.

yoyo talks to PostgreSQL through psycopg (it needs a blocking DB-API driver); the gateway itself
uses asyncpg. Migrating is blocking work done once, before serving: callers on the event loop run
it on a thread.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from yoyo import get_backend, read_migrations
from yoyo.exceptions import LockTimeout

#: How long a start waits for another process's migration (its lock row) before giving up.
LOCK_TIMEOUT_S = 60

_SOURCES = {
    "sqlite": "package:manager_gateway:ledger/migrations/sqlite",
    "postgresql": "package:manager_gateway:ledger/migrations/postgresql",
}


class MigrationError(Exception):
    """The ledger's schema could not be brought up to date."""


def migrate_sqlite(path: Path) -> list[str]:
    """Bring the SQLite ledger at `path` (created if missing) up to date; the ids applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return _migrate("sqlite:///" + quote(str(path.resolve())), "sqlite")


def migrate_postgres(url: str) -> list[str]:
    """Bring the PostgreSQL ledger at `url` (`postgresql://...`) up to date; the ids applied."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        raise MigrationError(f"not a PostgreSQL URL: {scheme}://...")
    return _migrate("postgresql+psycopg://" + rest, "postgresql")


def _migrate(uri: str, engine: str) -> list[str]:
    try:
        backend = get_backend(uri)
    except Exception as exc:  # a driver's own error: unreachable server, bad credentials
        raise MigrationError(f"cannot connect to the ledger to migrate it: {_line(exc)}") from exc
    try:
        migrations = read_migrations(_SOURCES[engine])
        # yoyo's lock retries every database error until its timeout: a file that is not a
        # ledger would cost a start LOCK_TIMEOUT_S before its error. Reading the catalogue
        # fails at once.
        backend.list_tables()
        with backend.lock(timeout=LOCK_TIMEOUT_S):
            todo = backend.to_apply(migrations)
            backend.apply_migrations(todo)
        return [m.id for m in todo]
    except LockTimeout as exc:
        raise MigrationError(
            f"another process has been migrating this ledger for over {LOCK_TIMEOUT_S} s;"
            " if none is (one was killed while migrating), remove its row from yoyo_lock"
        ) from exc
    except Exception as exc:
        raise MigrationError(f"migrating the ledger failed: {_line(exc)}") from exc
    finally:
        backend.connection.close()


def _line(exc: Exception) -> str:
    """A driver's message on one line (libpq's run over several)."""
    return " ".join(str(exc).split())
