"""Over real TCP, every byte the gateway writes is 7-bit ASCII, and every frame parses to the values
sent, as received and after the official clients' repairs (issue 12).

The PHP client rewrites `'` and deletes `,` before `}`/`]` in every frame; the Node client decodes
each read as UTF-8 on its own. Comments, names, emails, group names, extIDs and error messages
that echo input all carry such characters here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from ..conftest import DEMO_USER, Client, GatewayFactory, Harness
from ..official_clients import chunks, node_decode, node_repair, php_repair

COMMENT = 'Ann\'s 奖金 🎉 ", }" ",]"'
NAME = "王小明 'Ann', }"
EMAIL = "ann's@例え.jp"
GROUP = "VIP 'Ost' 東京 ,]"
GROUPS = [
    {"name": "demo", "currency": "USD", "digits": 2},
    {"name": GROUP, "currency": "EUR", "digits": 2},
]
PAGE_ROWS = 1000
READ_BYTES = 1000


class TapReader:
    """A StreamReader stand-in that keeps every line it hands out."""

    def __init__(self, reader: asyncio.StreamReader, frames: list[bytes]) -> None:
        self._reader = reader
        self._frames = frames

    async def readline(self) -> bytes:
        line = await self._reader.readline()
        if line:
            self._frames.append(line)
        return line


class TappedClient(Client):
    """The conftest client, keeping the bytes of every frame it receives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.frames: list[bytes] = []
        super().__init__(TapReader(reader, self.frames), writer)  # type: ignore[arg-type]


async def tapped(h: Harness) -> TappedClient:
    """A tapped manager client, closed with the harness."""
    client = await TappedClient.connect(h.port, h.token())
    assert isinstance(client, TappedClient)
    h.clients.append(client)
    return client


def assert_clients_parse_intact(frames: list[bytes]) -> None:
    """Each frame is ASCII and parses alike as received, for PHP and for Node."""
    assert frames
    for frame in frames:
        assert frame.isascii(), frame
        value = orjson.loads(frame)
        assert orjson.loads(php_repair(frame)) == value, frame
        assert orjson.loads(node_repair(frame)) == value, frame


@pytest.fixture
async def h(make_gateway: GatewayFactory) -> Harness:
    """A gateway with a second group whose name needs escaping."""
    return await make_gateway(groups=GROUPS)


async def test_answers_and_events_carry_any_text_intact(h: Harness) -> None:
    """Answers, a Sync answer and its events on two connections: ASCII, values as sent."""
    manager, listener = await tapped(h), await tapped(h)
    await listener.ok("Subscribe", {"chanels": []})  # binds its token: it hears events now
    user = {**DEMO_USER, "login": 1001, "group": GROUP, "name": NAME, "email": EMAIL}
    await manager.ok("AddUser", user, ext_id="add 'ü' , }")

    sync_ext_id = "sync 'é' 🎉 ,]"
    record = await manager.ok(
        "CreditInSync", {"login": 1001, "amount": 300, "comment": COMMENT}, ext_id=sync_ext_id
    )
    assert (record["comment"], record["profit"], record["login"]) == (COMMENT, 300.0, 1001)
    trade = await listener.next_event()
    assert trade == {"event": "trade:event", "type": 0, "data": record}
    balance = await listener.next_event()
    assert balance["event"] == "balance:event" and balance["data"]["credit"] == 300.0

    assert await manager.ok("GetTradeByOrder", {"order": record["order"]}) == record
    profile = await manager.ok("GetAccountByLogin", {"login": 1001})
    assert (profile["name"], profile["email"], profile["group"]) == (NAME, EMAIL, GROUP)
    groups = await manager.ok("GetGroups")
    assert GROUP in {row["group"] for row in groups["rows"]}

    sync_answers = [f for f in manager.frames if orjson.loads(f).get("extID") == sync_ext_id]
    assert [orjson.loads(f) for f in sync_answers] == [
        {"extID": sync_ext_id, "status": 200, "data": record}
    ]
    # Five answers and, since a bound session hears events by default, the two events; the
    # listener's Subscribe answer and the two events.
    assert manager.drain_events() == [trade, balance]
    assert len(manager.frames) == 7 and len(listener.frames) == 3
    assert_clients_parse_intact(manager.frames)
    assert_clients_parse_intact(listener.frames)


async def test_error_messages_that_echo_input_are_ascii(h: Harness) -> None:
    """Error messages and extIDs that echo input arrive as ASCII and intact."""
    client = await tapped(h)
    missing = await client.request("AddUser", {**DEMO_USER, "group": "grüppe"})
    assert (missing["error"], missing["message"]) == ("GROUP_NOT_FOUND", "group 'grüppe' not found")

    command = "Ann's 奖金"
    unknown = await client.request(command, {}, ext_id="ext 'ü' ,]")
    assert (unknown["extID"], unknown["error"]) == ("ext 'ü' ,]", "UNKNOWN_COMMAND")
    assert unknown["message"] == f"unknown command {command!r}"

    invalid = await client.request("AddUser", {**DEMO_USER, "email": "ann's 奖金"})
    assert invalid["error"] == "INVALID_DATA"
    assert (
        invalid["message"].startswith("email: ") and "'^[^@\\s]+@[^@\\s]+$'" in invalid["message"]
    )

    envelope_ext_id = "no command, ]'é'"
    answer = client.expect(envelope_ext_id)
    client.send_raw(orjson.dumps({"extID": envelope_ext_id, "data": {}}) + b"\r\n")
    assert (await asyncio.wait_for(answer, 10))["error"] == "INVALID_REQUEST"

    assert len(client.frames) == 4
    assert_clients_parse_intact(client.frames)


async def test_a_thousand_row_page_read_in_1000_byte_pieces(h: Harness) -> None:
    """A 1,000-row page read in 1,000-byte pieces, each decoded alone, is intact."""
    client = await h.client()
    await h.add_user(client, 1001)
    comments = [f"{i} {COMMENT}"[: 64 + i % 100] for i in range(PAGE_ROWS)]
    acks: list[dict[str, Any]] = await asyncio.wait_for(
        asyncio.gather(
            *(
                client.send("CreditIn", {"login": 1001, "amount": 1.25, "comment": comment})
                for comment in comments
            )
        ),
        60,
    )
    assert all(ack["status"] == 200 for ack in acks)

    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    try:
        request = {
            "command": "MngGetTradesByFilter",
            "extID": "page 'é' ,}",
            "data": {"login": 1001, "limit": PAGE_ROWS},
            "__token": h.token(),
        }
        writer.write(orjson.dumps(request) + b"\r\n")
        reads: list[bytes] = []
        while not reads or not reads[-1].endswith(b"\r\n"):
            piece = await asyncio.wait_for(reader.read(READ_BYTES), 30)
            assert piece, "connection closed before the answer ended"
            reads.append(piece)
    finally:
        writer.close()
    frame = b"".join(reads)
    assert frame.count(b"\r\n") == 1 and frame.isascii()
    assert len(frame) > 100 * READ_BYTES

    answer = orjson.loads(node_decode(reads))
    assert orjson.loads(node_decode(chunks(frame, READ_BYTES))) == answer
    assert orjson.loads(php_repair(frame)) == answer
    assert orjson.loads(node_repair(frame)) == answer
    assert (answer["extID"], answer["status"], answer["data"]["count"]) == (
        "page 'é' ,}",
        200,
        PAGE_ROWS,
    )
    rows = answer["data"]["rows"]
    assert sorted(row["comment"] for row in rows) == sorted(comments)
    assert {(row["login"], row["profit"]) for row in rows} == {(1001, 1.25)}
