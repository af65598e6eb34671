"""Shared unit-test fixtures: a token service with a fixed test secret."""

from __future__ import annotations

import pytest

from manager_gateway.session.tokens import TokenService

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


@pytest.fixture
def tokens() -> TokenService:
    """A token service with a fixed test secret."""
    return TokenService(SECRET)
