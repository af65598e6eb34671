#!/usr/bin/env python3
"""The ceiling: the least work any CPython server can do for the gateway's frames.

It reads CRLF-terminated JSON request lines, parses each one, and answers with a 200 frame whose
`data` is a finance trade record of the same shape the gateway sends for `CreditInSync`: the
request's `login`, `amount` and `comment` echoed, a fresh `order`. There is no validation, no
authentication, no state and no disk. Every other request (a token check, an `Unsubscribe`,
`AddUser`) gets the same kind of answer, so a load generator sees every request succeed.

`tools/bench` measures the gateway as a ratio of this server's throughput, in the same run, with
the same generator and settings. Needs only orjson (and uses uvloop when installed):

    python3 tools/baseline_server.py --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time

import orjson

_orders = itertools.count(1)


def answer(frame: bytes) -> bytes:
    request = orjson.loads(frame)
    data = request.get("data") or {}
    now = int(time.time())
    record = {
        "order": next(_orders),
        "login": data.get("login", 0),
        "cmd": 7,
        "state": 3,
        "symbol": "",
        "volume": 0,
        "profit": data.get("amount", 0.0),
        "comment": data.get("comment", ""),
        "open_time": now,
        "close_time": now,
        "update_time": now,
        "reason": 7,
    }
    return orjson.dumps({"extID": request.get("extID"), "status": 200, "data": record}) + b"\r\n"


class LineProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        *frames, self.buffer = (self.buffer + data).split(b"\n")
        answers = [answer(frame) for frame in frames if frame.strip()]
        if answers and self.transport is not None:
            self.transport.write(b"".join(answers))  # one write per read, like the gateway


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(LineProtocol, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"baseline-server listening on {host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 = any free port")
    args = parser.parse_args()
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
