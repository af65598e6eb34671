"""PostgreSQL for the tests: the server `GATEWAY_TEST_POSTGRES_URL` names, else a throwaway one
started from the `pgserver` wheel (PostgreSQL binaries on PyPI), so a fresh machine needs nothing
installed by hand. Each test that asks gets a database of its own."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

ENV = "GATEWAY_TEST_POSTGRES_URL"


def execute(url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """One statement on a connection of its own, behind the gateways' backs, committed; the
    rows it returns, if any. Without `params` a `%` in it is literal."""
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(statement, params or None)  # type: ignore[arg-type]  # tests' SQL
        return cursor.fetchall() if cursor.description else []


def with_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


class PostgresServer:
    """A server the tests may create databases on."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._names = (f"gw_{os.getpid()}_{n}" for n in itertools.count())
        self.created: list[str] = []

    def database(self) -> str:
        """A new, empty database; its URL."""
        name = next(self._names)
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return with_database(self.url, name)

    def drop_created(self) -> None:
        """Drop the databases this session made (on a server that outlives it)."""
        with psycopg.connect(self.url, autocommit=True) as admin:
            for name in self.created:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """The configured server, else a throwaway one for as long as the block runs."""
    url = os.environ.get(ENV)
    if url:
        server = PostgresServer(url)
        try:
            yield server
        finally:
            server.drop_created()
        return
    import pgserver  # only when no server is configured: it unpacks PostgreSQL's binaries

    with tempfile.TemporaryDirectory(prefix="gateway-pg-") as data:
        server = pgserver.get_server(data, cleanup_mode="stop")
        url = server.get_uri()
        # A throwaway server: the tests kill gateways, never the database, so its own flushes
        # to disk buy nothing here and cost every commit, database creation and the shutdown
        # checkpoint (which took 15 s after one module). Commits still wait for the WAL write.
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("ALTER SYSTEM SET fsync = off")
            admin.execute("ALTER SYSTEM SET full_page_writes = off")
            admin.execute("SELECT pg_reload_conf()")
        try:
            yield PostgresServer(url)
        finally:
            server.cleanup()


#: The ledger engines a test module runs on when it imports `on_both_engines`.
ENGINES = ("sqlite", "postgresql")

#: For a test that uses a test double of the SQLite engine, in a module that runs on both.
SQLITE_ONLY = pytest.mark.parametrize("ledger_url", [""], ids=["sqlite"])


@pytest.fixture(params=ENGINES, name="ledger_url")
def on_both_engines(request: pytest.FixtureRequest) -> str:
    """Imported into a test module, this replaces conftest's `ledger_url` there: every test of
    the module runs on SQLite ("") and on a new PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database()


@pytest.fixture(name="ledger_url")
def on_postgresql(postgres: PostgresServer) -> str:
    """Imported into a test module, this replaces conftest's `ledger_url` there: every test of
    the module runs on a new PostgreSQL database."""
    return postgres.database()
