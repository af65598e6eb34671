"""`run_on_uvloop(coroutine)`: how the command lines (loadgen, bench, settlement simulate) run
their top coroutine: on uvloop when it is installed, on asyncio's own loop otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_on_uvloop(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
