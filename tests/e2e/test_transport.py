"""Transport-level limits and options: max_connections, slow consumers, TLS."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import orjson
import pytest

from manager_gateway.session.access import SessionType

from ..conftest import Client, GatewayFactory, wait_until


async def test_connections_over_max_connections_are_closed(make_gateway: GatewayFactory) -> None:
    """Past max_connections a new connection is closed at once; the ones held keep working, and
    a slot freed by a close is usable again."""
    h = await make_gateway(max_connections=3)
    held = [await h.client() for _ in range(3)]
    for client in held:
        assert (await client.ok("HealthCheck"))["status"] == "ok"
    refused = await Client.connect(h.port, h.token())
    await asyncio.wait_for(refused.closed.wait(), 5)
    await refused.close()
    assert refused.orphans == [] and refused.responses == {}
    assert h.gateway.metrics.connections_refused == 1
    assert all([(await client.ok("GetGroups"))["count"] == 1 for client in held])
    await held[0].close()
    h.clients.remove(held[0])
    # The gateway notices the close when it reads EOF; poll with round trips until it has.
    await wait_until(held[1], lambda: len(h.gateway.connections) == 2)
    again = await h.client()
    assert (await again.ok("GetGroups"))["count"] == 1


async def test_slow_consumer_is_closed_and_others_unaffected(make_gateway: GatewayFactory) -> None:
    """A listener that stops reading while events flood is closed once its queued output passes
    max_outbound_bytes; the writer and other listeners go on."""
    h = await make_gateway(max_outbound_bytes=64 * 1024)
    writer = await h.client()
    await h.add_user(writer, 1001)
    token = h.token(SessionType.ADMIN)
    # A raw socket with a tiny receive window that never reads after its first answer.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", h.port))
    request = {"command": "GetGroups", "extID": "bind", "data": {}, "__token": token}
    await loop.sock_sendall(sock, orjson.dumps(request) + b"\r\n")
    first = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
    assert b'"extID":"bind"' in first
    listener = await h.client(role=SessionType.ADMIN)
    assert (await listener.ok("GetGroups"))["count"] == 1
    deposits = 0
    try:
        for _ in range(200):
            if h.gateway.slow_consumer_disconnects:
                break
            deposits += 50
            answers = [
                writer.send("BalanceIn", {"login": 1001, "amount": 1, "comment": "x" * 200})
                for _ in range(50)
            ]
            assert all(a["status"] == 200 for a in await asyncio.gather(*answers))
        assert h.gateway.slow_consumer_disconnects == 1
        # The listener that kept reading got every event; the writer's account is right.
        events = listener.drain_events()
        while len(events) < 2 * deposits:
            events.append(await listener.next_event())
        assert len(events) == 2 * deposits
        account = await writer.ok("GetAccountByLogin", {"login": 1001})
        assert account["balance"] == float(deposits)
    finally:
        sock.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_when_a_certificate_is_configured(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """With tls_cert_file and tls_key_file set, the gateway speaks the same protocol over TLS."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    h = await make_gateway(tls_cert_file=cert, tls_key_file=key)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port, ssl=context)
    client = Client(reader, writer)
    client.token = h.token()
    try:
        assert (await client.ok("GetGroups"))["count"] == 1
    finally:
        await client.close()
