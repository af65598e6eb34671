"""Fixtures for the settlement kit's tests: the reference wallet served on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from .wallet_server import WalletServer, serving
from .wallets import Account, Wallet

KIT_LOGIN = 7001
SIM_LOGINS = range(7001, 7009)


def sim_wallet(amount: str = "1000.00", **settings: Any) -> Wallet:
    """A wallet with eight funded accounts for the simulator."""
    accounts = {login: Account(amount=Decimal(amount)) for login in SIM_LOGINS}
    return Wallet(accounts=accounts, **settings)


@pytest.fixture
async def reference() -> AsyncIterator[WalletServer]:
    """The correct wallet, served."""
    async with serving(Wallet()) as server:
        yield server
