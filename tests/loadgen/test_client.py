"""GatewayClient against scripted servers: matching by extID, orphans, events, drops, framing."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway_bench.client import GatewayClient, encode_request

from .servers import answer_correctly, frame, serving


async def test_request_gets_its_answer_and_frames_end_with_crlf() -> None:
    """request() returns the answer with its extID; the frame sent ends with CRLF and carries
    __token only when one is given."""
    async with serving(answer_correctly) as server:
        client = await GatewayClient.connect("127.0.0.1", server.port)
        first = await client.request("HealthCheck", {}, ext_id="a", token="tok")
        second = await client.request("HealthCheck", {}, ext_id="b")
        assert (first["extID"], second["extID"]) == ("a", "b")
        assert all(line.endswith(b"}\r\n") for line in server.raw_lines)
        assert [r.get("__token") for r in server.requests] == ["tok", None]
        assert client.orphans == 0 and client.pending_count() == 0
        client.close()
        await client.wait_closed()


async def test_answers_are_matched_by_ext_id_not_by_arrival_order() -> None:
    """Two requests answered in reverse order each resolve with their own answer."""
    held: list[dict[str, Any]] = []

    def reverse_pairs(request: dict[str, Any]) -> list[bytes]:
        held.append(request)
        if len(held) < 2:
            return []
        return [
            frame({"extID": r["extID"], "status": 200, "data": {"n": r["data"]["n"]}})
            for r in reversed(held)
        ]

    async with serving(reverse_pairs) as server:
        client = await GatewayClient.connect("127.0.0.1", server.port)
        one = client.send("HealthCheck", {"n": 1}, ext_id="one")
        two = client.send("HealthCheck", {"n": 2}, ext_id="two")
        assert (await one)["data"] == {"n": 1} and (await two)["data"] == {"n": 2}
        client.close()


async def test_unknown_and_duplicate_answers_are_orphans_not_crashes() -> None:
    """An answer under an unknown extID and a second answer to the same request are counted in
    orphans and shown to on_orphan; the request still gets its first answer."""

    def duplicate_and_stray(request: dict[str, Any]) -> list[bytes]:
        answer = {"extID": request["extID"], "status": 200, "data": {}}
        return [frame(answer), frame(answer), frame({**answer, "extID": "nobody"})]

    async with serving(duplicate_and_stray) as server:
        client = await GatewayClient.connect("127.0.0.1", server.port)
        seen: list[dict[str, Any]] = []
        client.on_orphan = seen.append
        await client.request("HealthCheck", {}, ext_id="x")
        follow_up = await client.request("HealthCheck", {}, ext_id="y")  # orders the reads
        assert follow_up["extID"] == "y"
        assert client.orphans >= 2 and [m["extID"] for m in seen][:2] == ["x", "nobody"]
        client.close()


async def test_pushed_events_are_counted_and_handed_to_on_event() -> None:
    """Frames with "event" go to on_event and events_received, never to a request."""

    def event_then_answer(request: dict[str, Any]) -> list[bytes]:
        return [
            frame({"event": "trade:event", "type": 0, "data": {"order": 1}}),
            frame({"extID": request["extID"], "status": 200, "data": {}}),
        ]

    async with serving(event_then_answer) as server:
        events: list[dict[str, Any]] = []
        client = await GatewayClient.connect("127.0.0.1", server.port, on_event=events.append)
        await client.request("HealthCheck", {})
        assert client.events_received == 1 and events[0]["event"] == "trade:event"
        assert client.orphans == 0
        client.close()


async def test_split_frames_bare_newlines_blank_lines_and_garbage_are_handled() -> None:
    """An answer split over two writes, ended by a bare newline after blank lines and a
    non-JSON line, still resolves; the bad line is counted in bad_frames."""

    def awkward(request: dict[str, Any]) -> list[bytes]:
        body = orjson.dumps({"extID": request["extID"], "status": 200, "data": {}})
        return [b"\r\n\n", b"not json\r\n", b"[1]\n", body[:5], body[5:] + b"\n"]

    async with serving(awkward) as server:
        client = await GatewayClient.connect("127.0.0.1", server.port)
        answer = await client.request("HealthCheck", {}, ext_id="split")
        assert answer["status"] == 200 and client.bad_frames == 2
        client.close()


async def test_a_dropped_connection_fails_every_pending_request() -> None:
    """When the server drops the connection, pending futures fail with ConnectionError and
    pending callbacks get a ConnectionError; later sends fail at once."""
    all_read = asyncio.Event()

    def never_answer(request: dict[str, Any]) -> list[bytes]:
        if request["extID"] == "cb":
            all_read.set()
        return []

    async with serving(never_answer) as server:
        client = await GatewayClient.connect("127.0.0.1", server.port)
        futures = [client.send("HealthCheck", {}, ext_id=f"f{i}") for i in range(3)]
        got: list[tuple[str, Any]] = []
        client.send_cb("HealthCheck", {}, "cb", lambda ext_id, answer: got.append((ext_id, answer)))
        await asyncio.wait_for(all_read.wait(), 10)
        server.drop_connections()
        await client.wait_closed()
        for future in futures:
            with pytest.raises(ConnectionError):
                await future
        assert got[0][0] == "cb" and isinstance(got[0][1], ConnectionError)
        assert client.closed and client.pending_count() == 0
        with pytest.raises(ConnectionError):
            await client.send("HealthCheck", {}, ext_id="late")


async def test_request_timeout_forgets_the_request_and_a_late_answer_is_an_orphan() -> None:
    """A request that times out is no longer pending; its answer, if it ever comes, is an
    orphan."""
    held: list[dict[str, Any]] = []

    def hold_first(request: dict[str, Any]) -> list[bytes]:
        held.append(request)
        if request["extID"] == "slow":
            return []
        late = {"extID": "slow", "status": 200, "data": {}}
        return [frame(late), frame({"extID": request["extID"], "status": 200, "data": {}})]

    async with serving(hold_first) as server:
        client = await GatewayClient.connect("127.0.0.1", server.port)
        with pytest.raises(TimeoutError):
            await client.request("HealthCheck", {}, ext_id="slow", timeout=0.01)
        assert client.pending_count() == 0
        await client.request("HealthCheck", {}, ext_id="next")
        assert client.orphans == 1
        client.close()


async def test_callbacks_can_send_from_inside_an_answer() -> None:
    """send_cb's callback runs on each answer and may send the next request (the closed loop);
    frames sent from inside it still reach the server."""
    async with serving(answer_correctly) as server:
        client = await GatewayClient.connect("127.0.0.1", server.port)
        done = asyncio.get_running_loop().create_future()
        answers: list[str] = []

        def on_answer(ext_id: str, answer: dict[str, Any] | ConnectionError) -> None:
            assert isinstance(answer, dict)
            answers.append(ext_id)
            if len(answers) < 5:
                client.send_frame_cb(
                    encode_request("HealthCheck", {}, f"r{len(answers)}"),
                    f"r{len(answers)}",
                    on_answer,
                )
            else:
                done.set_result(None)

        client.send_cb("HealthCheck", {}, "r0", on_answer)
        await asyncio.wait_for(done, 10)
        assert answers == ["r0", "r1", "r2", "r3", "r4"] and client.orphans == 0
        client.close()


async def test_connect_to_a_closed_port_raises_oserror() -> None:
    """connect() to a port nobody listens on raises OSError (ConnectionRefusedError)."""
    async with serving(answer_correctly) as server:
        port = server.port
    with pytest.raises(OSError):
        await GatewayClient.connect("127.0.0.1", port)


async def test_expect_then_send_raw_resolves_pre_encoded_frames() -> None:
    """Bulk senders register with expect() and write many frames at once with send_raw(); a
    frame written with no waiter gets its answer counted as an orphan."""
    async with serving(answer_correctly) as server:
        client = await GatewayClient.connect("127.0.0.1", server.port)
        futures = [client.expect(f"b{i}") for i in range(3)]
        client.send_raw(b"".join(encode_request("HealthCheck", {}, f"b{i}") for i in range(4)))
        answers = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert [a["extID"] for a in answers] == ["b0", "b1", "b2"]
        await client.request("HealthCheck", {})  # b3's answer was read before this one's
        assert client.orphans == 1
        client.close()
        await client.wait_closed()
        with pytest.raises(ConnectionError):
            await client.expect("after-close")
