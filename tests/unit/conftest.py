"""Shared unit-test fixtures: a token service with a fixed test secret, and gateways without a
listener for the connection tests (`Rig`, in test_connection.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from manager_gateway.config import load_settings
from manager_gateway.runtime.storage import Storage
from manager_gateway.server.app import Gateway
from manager_gateway.session.tokens import TokenService
from tests.fakes import FakeClock, storage_of, threaded

from .test_connection import Rig, RigFactory, turns

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


@pytest.fixture
def tokens() -> TokenService:
    """A token service with a fixed test secret."""
    return TokenService(SECRET)


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    """Build a gateway (main loop started, no listener) with settings overrides."""
    rigs: list[Rig] = []

    async def build(*, storage: Storage | None = None, **overrides: Any) -> Rig:
        data_dir = tmp_path / f"data{len(rigs)}"
        settings = load_settings(
            None, data_dir=data_dir, port=0, ledger_synchronous="FULL", **overrides
        )
        clock = FakeClock()
        gateway = Gateway(settings, clock=clock, ledger=threaded(storage))
        await gateway.runtime.start()
        rig = Rig(gateway, clock)
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        for transport in rig.transports:
            transport.close()
        await turns()
        # A test ledger that holds commits (GatedLedger, test_connection_outcomes.py's
        # SteppedLedger) lets them all through, or stop() would wait for them.
        release = getattr(storage_of(rig.gateway.ledger), "release", None)
        if release is not None:
            release()
        await rig.gateway.runtime.stop()
