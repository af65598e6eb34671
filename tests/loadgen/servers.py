"""Tiny in-test servers of the gateway protocol: a scripted one, a correct one, a wrong one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

# request -> the raw bytes to write back (any number of frames, or partial ones)
Responder = Callable[[dict[str, Any]], list[bytes]]

CMD = {"BalanceIn": 6, "CreditIn": 7, "BalanceOut": 8, "CreditOut": 9}
_orders = itertools.count(1)


def frame(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\r\n"


def correct_answer(request: dict[str, Any]) -> dict[str, Any]:
    """What a correct gateway answers (enough of it for the checks)."""
    command, data = request["command"], request.get("data") or {}
    result: dict[str, Any] = {}
    base = command.removesuffix("Sync")
    if base in CMD and command.endswith("Sync"):
        result = {
            "order": next(_orders),
            "login": data["login"],
            "cmd": CMD[base],
            "state": 3,
            "profit": data["amount"],
            "comment": data.get("comment", "Finance"),
        }
    elif base in CMD:
        result = {
            "accepted": True,
            "order": next(_orders),
            "state": 10,
            "login": data["login"],
            "cmd": CMD[base],
            "amount": data["amount"],
        }
    elif command == "GetAccountByLogin":
        result = {"login": data["login"], "balance": 0.0, "credit": 0.0}
    return {"extID": request["extID"], "status": 200, "data": result}


class ScriptedServer:
    """Answers each request line with whatever `respond(request)` returns; records requests."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self.origins: list[asyncio.StreamWriter] = []  # the connection each request came on
        self.raw_lines: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                self.raw_lines.append(line)
                request = orjson.loads(line)
                self.requests.append(request)
                self.origins.append(writer)
                for chunk in self.respond(request):
                    writer.write(chunk)
                    await writer.drain()  # each chunk its own write: partial frames stay split
        writer.close()

    def drop_connections(self) -> None:
        for writer in self.writers:
            writer.transport.abort()

    async def close(self) -> None:
        assert self._server is not None
        self.drop_connections()
        self._server.close()
        await self._server.wait_closed()


@contextlib.asynccontextmanager
async def serving(respond: Responder) -> AsyncIterator[ScriptedServer]:
    server = await ScriptedServer(respond).start()
    try:
        yield server
    finally:
        await server.close()


def answer_correctly(request: dict[str, Any]) -> list[bytes]:
    return [frame(correct_answer(request))]


WRONG_FIRST_LOGIN = 100_000


def answer_wrongly(request: dict[str, Any]) -> list[bytes]:
    """By login (loadgen spreads requests over logins evenly): 100000 right, 100001 a wrong
    login, 100002 a 500, 100003 right plus an answer under an extID nobody sent."""
    answer = correct_answer(request)
    login = (request.get("data") or {}).get("login")
    if login == WRONG_FIRST_LOGIN + 1:
        answer["data"]["login"] = login + 1
    elif login == WRONG_FIRST_LOGIN + 2:
        answer = {
            "extID": request["extID"],
            "status": 500,
            "error": "INTERNAL_ERROR",
            "message": "boom",
        }
    elif login == WRONG_FIRST_LOGIN + 3:
        return [frame(answer), frame({**answer, "extID": "bogus-" + request["extID"]})]
    return [frame(answer)]
