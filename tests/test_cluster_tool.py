"""tools/cluster as a new user runs it: PostgreSQL and the nodes start, what it prints works, and
SIGTERM (as Ctrl-C) stops everything and leaves nothing behind."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from pathlib import Path

from .conftest import DEMO_USER, Client

ROOT = Path(__file__).parents[1]
START_TIMEOUT_S = 60.0


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive ports free a moment ago."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first: int = probe.getsockname()[1]
        if first + count >= 65536:
            continue
        taken = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                taken.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in taken:
                sock.close()
    raise AssertionError("no run of free ports")


async def test_cluster_starts_serves_across_nodes_and_stops_clean() -> None:
    port, settlement = consecutive_free_ports(2), consecutive_free_ports(2)
    tool = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "tools" / "cluster.py"), "--nodes", "2",
        "--port", str(port), "--settlement-port", str(settlement),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    assert tool.stdout is not None
    printed = []
    try:
        while not printed or "Ctrl-C stops everything" not in printed[-1]:
            line = await asyncio.wait_for(tool.stdout.readline(), START_TIMEOUT_S)
            assert line, "tools/cluster exited early:\n" + "".join(printed)
            printed.append(line.decode())
        text = "".join(printed)
        assert f"127.0.0.1:{port}, 127.0.0.1:{port + 1}" in text
        token = re.search(r"valid on every node.*\n\s+(\S+)", text)
        logs = re.search(r"logs\s+(\S+)/node\*\.log", text)
        assert token and logs, text
        listener = await Client.connect(port + 1, token.group(1))
        writer = await Client.connect(port, token.group(1))
        await listener.ok("HealthCheck")
        await writer.ok("AddUser", {**DEMO_USER, "login": 1001})
        record = await writer.ok("CreditInSync", {"login": 1001, "amount": 5, "comment": "c"})
        event = await listener.next_event(timeout=10)
        assert event == {"event": "trade:event", "type": 0, "data": record}
        await listener.close()
        await writer.close()
    finally:
        if tool.returncode is None:
            tool.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(tool.stdout.read(), START_TIMEOUT_S)
        status = await asyncio.wait_for(tool.wait(), START_TIMEOUT_S)
    assert status == 0, rest.decode()
    assert "stopping the nodes, then PostgreSQL" in rest.decode()
    assert not Path(logs.group(1)).exists()  # the database and the nodes' data went with it
