"""Admission of a connection that completes once the gateway is draining.

The listener is closed when the drain starts, so over TCP a new connection is refused by the
kernel (tests/e2e/test_shutdown.py). One the listener had already accepted can still reach
`connection_made` afterwards (asyncio calls it a few loop turns after the accept, or after the
TLS handshake): that one is refused by `Gateway.admit`, which only a fake transport can time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from manager_gateway.config import load_settings
from manager_gateway.server.app import Gateway
from manager_gateway.server.connection import Connection
from tests.fakes import FakeClock

from .test_connection import FakeTransport, request, turns


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway with its main loop started and no listener, on a fake clock."""
    settings = load_settings(None, data_dir=tmp_path / "data", port=0, ledger_synchronous="FULL")
    gateway = Gateway(settings, clock=FakeClock())
    await gateway.runtime.start()
    yield gateway
    await gateway.shutdown()


def connect(gateway: Gateway) -> tuple[Connection, FakeTransport]:
    conn = Connection(gateway)
    transport = FakeTransport(conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_connection_made_while_draining_is_refused(gateway: Gateway) -> None:
    """Before the drain a connection is admitted; one whose connection_made comes after the drain
    started is aborted unanswered, counted as refused and never registered, while the one
    admitted earlier is closed by the drain."""
    admitted, admitted_transport = connect(gateway)
    assert gateway.connections == {admitted}
    assert (gateway.metrics.connections_accepted, gateway.metrics.connections_refused) == (1, 0)

    await gateway.shutdown()
    late, late_transport = connect(gateway)
    assert late_transport.aborted
    assert gateway.metrics.connections_refused == 1
    assert gateway.metrics.connections_accepted == 1
    late.data_received(request("HealthCheck", "late"))  # bytes already in flight are ignored
    await turns()
    assert late_transport.written == []
    assert late not in gateway.connections
    assert admitted_transport.closing and not admitted_transport.aborted
    assert gateway.connections == set()
