"""A connection flood past the process's file limit: the listener and the sessions already open
keep working, and new connections are accepted again once the flood is gone."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import sys
from pathlib import Path

import orjson
import pytest

CLI = (sys.executable, "-m", "manager_gateway.cli")
LISTENING = re.compile(rb"manager-gateway listening on 127\.0\.0\.1:(\d+)")
FILE_LIMIT = 96  # the gateway's hard limit on open files: a few dozen are its own (ledger, ...)
FLOOD = 300  # connections opened at once, far past it
TIMEOUT_S = 20
RECONNECT_ATTEMPTS = 500  # real connection attempts, not sleeps


def _limit_files() -> None:
    """In the gateway's process before it starts: `serve` raises its soft limit to the hard one,
    so the hard one is what holds."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


async def _round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    frame = {"command": "HealthCheck", "extID": f"probe-{n}", "data": {}}
    writer.write(orjson.dumps(frame) + b"\r\n")
    answer = orjson.loads(await asyncio.wait_for(reader.readline(), TIMEOUT_S))
    assert (answer["extID"], answer["status"]) == (f"probe-{n}", 200), answer


@pytest.mark.slow
async def test_flood_past_the_file_limit_keeps_the_listener_and_sessions(tmp_path: Path) -> None:
    """300 connections against a gateway allowed 96 open files: the ones it cannot keep are
    closed at once, the session opened before keeps answering throughout, the gateway stays up,
    and after the flood closes new connections are served again."""
    log = (tmp_path / "server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        "0",
        "--settlement-port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        preexec_fn=_limit_files,
    )
    flood: list[asyncio.StreamWriter] = []
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S)
        match = LISTENING.search(line)
        assert match, line
        port = int(match.group(1))
        keeper = await asyncio.open_connection("127.0.0.1", port)
        await _round_trip(*keeper, 0)

        async def attempt() -> None:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), TIMEOUT_S
                )
                flood.append(writer)

        await asyncio.gather(*(attempt() for _ in range(FLOOD)))
        assert len(flood) > FILE_LIMIT  # the kernel completed more handshakes than it may accept
        await _round_trip(*keeper, 1)  # the open session is unaffected
        assert proc.returncode is None

        for writer in flood:
            writer.close()
        flood.clear()
        # Out of descriptors, libuv accepts and at once closes what it cannot keep (so the
        # backlog drains instead of the loop spinning): a client just sees its connection end
        # and tries again. Once the gateway has seen the flood close, a new one is served.
        for _ in range(RECONNECT_ATTEMPTS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                await _round_trip(reader, writer, 2)
                break
            except (orjson.JSONDecodeError, ConnectionError):
                writer.close()
        else:
            raise AssertionError("no new connection was served after the flood")
        writer.close()
        await _round_trip(*keeper, 3)
        keeper[1].close()
    finally:
        for writer in flood:
            writer.close()
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), TIMEOUT_S)
        log.close()
