"""The bad-input catalogue (issue 4): every hostile frame gets its documented answer, and nothing
else happens. After each one the same connection still answers, a session opened before it
still answers, and no money has moved (docs/protocol.md sections 1, 2, 4, 5 and 8)."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from manager_gateway.config import load_settings
from manager_gateway.server.app import Gateway
from manager_gateway.session.access import SessionType

from ..conftest import Client, GatewayFactory, Harness, wait_until

LOGIN = 1001  # the account every case aims at; it must keep balance 0 and credit 0
SPARE = 1002  # an account for the cases that are meant to succeed and so move money
MISSING = object()  # marks a field to leave out
TOKEN = b"@TOKEN@"  # replaced in raw frames by the scene's manager token
USER_TOKEN = b"@USER_TOKEN@"  # replaced by a USER session's token


@dataclass
class Scene:
    """A gateway with the client under attack, a bystander session and an untouched account."""

    gw: Harness
    client: Client
    bystander: Client

    def fill(self, frame: bytes) -> bytes:
        user = self.gw.token(SessionType.USER, login=LOGIN).encode()
        return frame.replace(TOKEN, str(self.client.token).encode()).replace(USER_TOKEN, user)


_SEEDED: list[Path] = []  # the module's template data directory, once made


async def seeded_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding both accounts and no money, made once per module: AddUser
    hashes its password on purpose slowly, and a hundred cases would wait for it."""
    if not _SEEDED:
        data_dir = tmp_path_factory.mktemp("seeded") / "data"
        settings = load_settings(
            None, host="127.0.0.1", port=0, settlement_port=0, data_dir=data_dir
        )
        gateway = Gateway(settings)
        await gateway.start()
        harness = Harness(gateway, data_dir)
        try:
            client = await harness.client()
            for login in (LOGIN, SPARE):
                await harness.add_user(client, login)
        finally:
            await harness.close_clients()
            await gateway.shutdown()
        _SEEDED.append(data_dir)
    return _SEEDED[0]


async def start_seeded(
    make_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory, **settings: Any
) -> Harness:
    """A gateway on a fresh copy of the seeded data directory."""
    data_dir = tmp_path_factory.mktemp("case") / "data"
    shutil.copytree(await seeded_data_dir(tmp_path_factory), data_dir)
    return await make_gateway(data_dir=data_dir, **settings)


@pytest.fixture
async def scene(make_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """The bystander binds its token first; the account starts with no money."""
    gw = await start_seeded(make_gateway, tmp_path_factory)
    bystander = await gw.client()
    assert (await bystander.ok("GetGroups"))["count"] == 1
    client = await gw.client()
    assert (await client.ok("GetAccountByLogin", {"login": LOGIN}))["balance"] == 0.0
    return Scene(gw, client, bystander)


async def assert_unharmed(scene: Scene) -> None:
    """Both sessions still answer 200 and the account has no money and no records."""
    assert (await scene.client.ok("HealthCheck"))["status"] == "ok"
    account = await scene.client.ok("GetAccountByLogin", {"login": LOGIN})
    assert (account["balance"], account["credit"]) == (0.0, 0.0)
    trades = await scene.bystander.ok("MngGetTradesByFilter", {"login": LOGIN})
    assert trades["count"] == 0
    assert scene.gw.gateway.waiters.pending_count() == 0


def dumps(obj: object) -> bytes:
    """Compact JSON by the standard library, which (unlike orjson) writes integers past 64 bits
    and the NaN / Infinity literals the gateway must refuse."""
    return json.dumps(obj, separators=(",", ":")).encode()


def request(command: str, data: object, ext_id: str, token: object = TOKEN) -> bytes:
    envelope: dict[str, Any] = {"command": command, "extID": ext_id, "data": data}
    if token is not MISSING:
        envelope["__token"] = token.decode() if isinstance(token, bytes) else token
    return dumps(envelope)


async def answer_of(client: Client, frame: bytes, ext_id: str | None) -> dict[str, Any]:
    """Send one raw frame and return its answer: under `ext_id`, or the next one under null."""
    if ext_id is not None:
        future = client.expect(ext_id)
        client.send_raw(frame + b"\r\n")
        return await asyncio.wait_for(future, 5)
    seen = len(client.orphans)
    client.send_raw(frame + b"\r\n")
    await wait_until(client, lambda: len(client.orphans) > seen)
    assert len(client.orphans) == seen + 1, client.orphans
    return client.orphans[-1]


def check_error(answer: dict[str, Any], status: int, error: str, ext_id: str | None) -> None:
    assert (answer["extID"], answer["status"], answer["error"]) == (ext_id, status, error), answer
    assert isinstance(answer["message"], str) and answer["message"]
    assert "event" not in answer


# ---------------------------------------------------------------- envelope and JSON


def deposit(amount: bytes = b"5", comment: bytes = b'"c"', ext_id: bytes = b'"dep"') -> bytes:
    """A BalanceIn frame for the account, written by hand so any literal can go in it."""
    return (
        b'{"command":"BalanceIn","extID":'
        + ext_id
        + b',"__token":"'
        + TOKEN
        + b'","data":{"login":1001,"amount":'
        + amount
        + b',"comment":'
        + comment
        + b"}}"
    )


def invalid_json(frame: bytes, case_id: str) -> Any:
    return pytest.param(frame, 400, "INVALID_JSON", None, id=case_id)


def invalid_request(frame: bytes, ext_id: str | None, case_id: str) -> Any:
    return pytest.param(frame, 400, "INVALID_REQUEST", ext_id, id=case_id)


VALID = request("BalanceIn", {"login": LOGIN, "amount": 5}, "x")

ENVELOPE_CASES = [
    invalid_json(VALID[:-1], "json-truncated"),
    invalid_json(b"hello world", "json-garbage"),
    invalid_json(b"\x00\x00\x00", "json-nul-bytes"),
    invalid_json(VALID[:-1] + b",}", "json-trailing-comma"),
    invalid_json(VALID.replace(b'"', b"'"), "json-single-quotes"),
    invalid_json(VALID + b" " + VALID, "json-two-values-one-line"),
    invalid_json(deposit(comment=b'"\xff\xfe"'), "utf8-invalid-bytes"),
    invalid_json(deposit(comment=b'"\xc0\xaf"'), "utf8-overlong"),
    invalid_json(deposit(comment=b'"\xed\xa0\x80"'), "utf8-encoded-surrogate"),
    invalid_json(deposit(comment=b'"\\ud800"'), "lone-surrogate-escape"),
    invalid_json(deposit(comment=b'"\\udc00x"'), "lone-low-surrogate-escape"),
    invalid_json(deposit(amount=b"NaN"), "amount-NaN"),
    invalid_json(deposit(amount=b"Infinity"), "amount-Infinity"),
    invalid_json(deposit(amount=b"-Infinity"), "amount-minus-Infinity"),
    invalid_json(deposit(amount=b"1e400"), "amount-1e400"),
    invalid_json(b"[" * 5000 + b"]" * 5000, "nesting-5000-arrays"),
    invalid_json(b"[" * 5000, "nesting-5000-unclosed"),
    invalid_json(
        deposit(comment=b'{"a":' * 5000 + b"1" + b"}" * 5000), "nesting-5000-objects-in-data"
    ),
    invalid_json(b"[" + VALID + b"]", "top-level-array"),
    invalid_json(b'"BalanceIn"', "top-level-string"),
    invalid_json(b"1001", "top-level-number"),
    invalid_json(b"null", "top-level-null"),
    invalid_json(b"true", "top-level-bool"),
    invalid_request(b"{}", None, "empty-object"),
    invalid_request(request("BalanceIn", [LOGIN, 5], "d1"), "d1", "data-array"),
    invalid_request(request("BalanceIn", "login=1001", "d2"), "d2", "data-string"),
    invalid_request(request("BalanceIn", 1001, "d3"), "d3", "data-number"),
    invalid_request(request("BalanceIn", True, "d4"), "d4", "data-bool"),
    invalid_request(dumps({"command": "BalanceIn", "data": {}}), None, "extID-missing"),
    invalid_request(request("BalanceIn", {}, ""), None, "extID-empty"),
    invalid_request(request("BalanceIn", {}, "e" * 129), None, "extID-129-chars"),
    invalid_request(request("BalanceIn", {}, "e" * 100_000), None, "extID-100000-chars"),
    invalid_request(dumps({"command": "BalanceIn", "extID": 17, "data": {}}), None, "extID-number"),
    invalid_request(
        dumps({"command": "BalanceIn", "extID": ["x"], "data": {}}), None, "extID-array"
    ),
    invalid_request(dumps({"extID": "c1", "data": {}}), "c1", "command-missing"),
    invalid_request(request("", {}, "c2"), "c2", "command-empty"),
    invalid_request(dumps({"command": 6, "extID": "c3", "data": {}}), "c3", "command-number"),
    invalid_request(
        dumps({"command": ["BalanceIn"], "extID": "c4", "data": {}}), "c4", "command-array"
    ),
    pytest.param(request("Nope", {}, "u1"), 404, "UNKNOWN_COMMAND", "u1", id="unknown-command"),
    pytest.param(
        request("balancein", {"login": LOGIN, "amount": 5}, "u2"),
        404,
        "UNKNOWN_COMMAND",
        "u2",
        id="unknown-command-wrong-case",
    ),
    pytest.param(
        request("B" * 10_000, {}, "u3"),
        404,
        "UNKNOWN_COMMAND",
        "u3",
        id="unknown-command-10000-chars",
    ),
    pytest.param(
        request("Nope", {}, "u4", token=MISSING),
        404,
        "UNKNOWN_COMMAND",
        "u4",
        id="unknown-command-before-token",
    ),
    pytest.param(
        request("BalanceIn", {"login": LOGIN, "amount": 5}, "t2", token="x.y.z"),
        401,
        "INVALID_TOKEN",
        "t2",
        id="token-garbage",
    ),
    pytest.param(
        request("BalanceIn", {"login": LOGIN, "amount": 5}, "t3", token=12345),
        401,
        "INVALID_TOKEN",
        "t3",
        id="token-number",
    ),
    pytest.param(
        request("BalanceIn", {"login": LOGIN, "amount": 5}, "t4", token=USER_TOKEN),
        403,
        "PERMISSION_DENIED",
        "t4",
        id="token-of-a-user-session",
    ),
]


@pytest.mark.parametrize(("frame", "status", "error", "ext_id"), ENVELOPE_CASES)
async def test_bad_frame(
    scene: Scene, frame: bytes, status: int, error: str, ext_id: str | None
) -> None:
    """A malformed frame or envelope gets its documented error; nothing else changes."""
    answer = await answer_of(scene.client, scene.fill(frame), ext_id)
    check_error(answer, status, error, ext_id)
    await assert_unharmed(scene)


@pytest.mark.parametrize(
    ("command", "data", "status", "error"),
    [
        pytest.param(
            "BalanceIn", {"login": LOGIN, "amount": 5}, 401, "INVALID_TOKEN", id="token-missing"
        ),
        pytest.param(
            "BalanceIn",
            {"login": LOGIN, "amount": 0},
            401,
            "INVALID_TOKEN",
            id="token-missing-is-checked-before-data",
        ),
        pytest.param("Nope", {}, 404, "UNKNOWN_COMMAND", id="unknown-command-before-token"),
    ],
)
async def test_no_token_on_an_unbound_connection(
    scene: Scene, command: str, data: dict[str, Any], status: int, error: str
) -> None:
    """A connection that never presented a token is refused every command but HealthCheck,
    in the documented order of checks, and stays open."""
    stranger = await Client.connect(scene.gw.port)
    scene.gw.clients.append(stranger)
    answer = await answer_of(stranger, request(command, data, "anon", token=MISSING), "anon")
    check_error(answer, status, error, "anon")
    assert (await stranger.ok("HealthCheck"))["status"] == "ok"
    await assert_unharmed(scene)


async def test_blank_lines_are_ignored(scene: Scene) -> None:
    """Empty lines, CRLF or bare LF, are skipped without an answer."""
    scene.client.send_raw(b"\r\n\n\r\n\n")
    await assert_unharmed(scene)
    assert scene.client.orphans == []


# ---------------------------------------------------------------- finance data

FINANCE = [
    "BalanceIn",
    "BalanceOut",
    "CreditIn",
    "CreditOut",
    "BalanceInSync",
    "BalanceOutSync",
    "CreditInSync",
    "CreditOutSync",
]


def sign_of(command: str) -> int:
    """The sign a valid amount takes: > 0 for `*In`, < 0 for `*Out` (and the deletes)."""
    return 1 if command.removesuffix("Sync").endswith("In") else -1


@dataclass(frozen=True)
class Field:
    """A bad value for one finance field: `signed` numbers take the command's own sign (so an
    out-of-range amount is out of range, not merely of the wrong sign); `only` restricts the
    case to the commands whose name starts with it."""

    name: str
    value: object
    signed: bool = False
    only: str = ""


def field(name: str, value: object, case_id: str, *, signed: bool = False, only: str = "") -> Any:
    return pytest.param(Field(name, value, signed, only), id=case_id)


FIELD_CASES = [
    field("login", MISSING, "login-missing"),
    field("login", None, "login-null"),
    field("login", "1001", "login-string"),
    field("login", "", "login-empty-string"),
    field("login", True, "login-bool"),
    field("login", 1001.0, "login-float"),
    field("login", [LOGIN], "login-array"),
    field("login", {"login": LOGIN}, "login-object"),
    field("login", 0, "login-zero"),
    field("login", -LOGIN, "login-negative"),
    field("login", 2**70, "login-2**70"),
    field("amount", MISSING, "amount-missing"),
    field("amount", None, "amount-null"),
    field("amount", "5", "amount-string"),
    field("amount", "", "amount-empty-string"),
    field("amount", True, "amount-bool"),
    field("amount", [5], "amount-array"),
    field("amount", 0, "amount-zero"),
    field("amount", 0.0, "amount-zero-float"),
    field("amount", -5, "amount-wrong-sign", signed=True),
    field("amount", 5.005, "amount-three-decimals", signed=True),
    field("amount", 0.001, "amount-below-a-cent", signed=True),
    field("amount", 1_000_000_000.01, "amount-over-the-limit", signed=True),
    field("amount", 1e30, "amount-1e30", signed=True),
    field("amount", 2**70, "amount-2**70", signed=True),
    field("comment", 5, "comment-number"),
    field("comment", ["c"], "comment-array"),
    field("comment", True, "comment-bool"),
    field("comment", "x" * 256, "comment-256-chars"),
    field("comment", "x" * 10_000, "comment-10000-chars"),
    field("comment", MISSING, "comment-missing-on-credit", only="Credit"),
    field("comment", None, "comment-null-on-credit", only="Credit"),
    field("comment", "", "comment-empty-on-credit", only="Credit"),
    field("order", 0, "order-zero"),
    field("order", -1, "order-negative"),
    field("order", "1", "order-string"),
    field("order", True, "order-bool"),
    field("order", 1.5, "order-float"),
    field("order", 2**70, "order-2**70"),
    field("open_time", -1, "open_time-negative"),
    field("open_time", "1700000000", "open_time-string"),
    field("open_time", True, "open_time-bool"),
    field("open_time", 1.7e9, "open_time-float"),
    field("open_time", 2**41, "open_time-out-of-range"),
    field("open_time", 2**70, "open_time-2**70"),
    field("close_time", -1, "close_time-negative"),
    field("close_time", False, "close_time-bool"),
]


def finance_data(command: str, bad: Field) -> dict[str, Any]:
    sign = sign_of(command)
    data: dict[str, Any] = {"login": LOGIN, "amount": 5 * sign, "comment": "ok"}
    if bad.value is MISSING:
        del data[bad.name]
    elif bad.signed:
        assert isinstance(bad.value, int | float)
        data[bad.name] = bad.value * sign
    else:
        data[bad.name] = bad.value
    return data


@pytest.mark.parametrize("bad", FIELD_CASES)
async def test_bad_finance_field(scene: Scene, bad: Field) -> None:
    """Every finance command (async and Sync) answers a bad field 400 INVALID_DATA naming it."""
    commands = [command for command in FINANCE if command.startswith(bad.only)]
    for index, command in enumerate(commands):
        ext_id = f"{command}-{index}"
        frame = request(command, finance_data(command, bad), ext_id)
        answer = await answer_of(scene.client, scene.fill(frame), ext_id)
        check_error(answer, 400, "INVALID_DATA", ext_id)
        assert answer["message"].startswith(bad.name), (command, answer)
    await assert_unharmed(scene)


@pytest.mark.parametrize(
    ("commands", "data", "status", "error"),
    [
        pytest.param(FINANCE, {"login": 999_999}, 404, "USER_NOT_FOUND", id="login-unknown"),
        pytest.param(
            ["BalanceOut", "BalanceOutSync"],
            {},
            400,
            "NOT_ENOUGH_MONEY",
            id="withdraw-more-than-balance",
        ),
        pytest.param(
            ["CreditOut", "CreditOutSync"],
            {},
            400,
            "NOT_ENOUGH_CREDIT",
            id="withdraw-more-than-credit",
        ),
        pytest.param(
            ["DeleteBalance", "DeleteCredit", "DeleteBalanceSync", "DeleteCreditSync"],
            {"order": 0},
            400,
            "INVALID_DATA",
            id="delete-order-zero",
        ),
        pytest.param(
            ["DeleteBalance", "DeleteCredit", "DeleteBalanceSync", "DeleteCreditSync"],
            {"order": 777},
            404,
            "TRADE_NOT_FOUND",
            id="delete-order-unknown",
        ),
    ],
)
async def test_refused_against_state(
    scene: Scene, commands: list[str], data: dict[str, Any], status: int, error: str
) -> None:
    """Well-formed requests that the state refuses answer their error and apply nothing."""
    for index, command in enumerate(commands):
        ext_id = f"{command}-{index}"
        body = {"login": LOGIN, "amount": 5 * sign_of(command), "comment": "ok", **data}
        answer = await answer_of(scene.client, scene.fill(request(command, body, ext_id)), ext_id)
        check_error(answer, status, error, ext_id)
    await assert_unharmed(scene)


# ---------------------------------------------------------------- what is meant to succeed


async def test_unknown_fields_are_ignored(scene: Scene) -> None:
    """Unknown keys in `data` and in the envelope are ignored: the deposit goes to its own
    account only, and a client-sent `__access` grants nothing."""
    frame = dumps(
        {
            "command": "BalanceIn",
            "extID": "extra",
            "__token": scene.client.token,
            "surprise": [1, {"x": None}],
            "extId": "ignored-alias",
            "data": {
                "login": SPARE,
                "amount": 7,
                "__access": {"type": 3, "groups": ["*"]},
                "cmd": 9,
                "profit": -1e30,
                "balance": 10**30,
                "login2": LOGIN,
            },
        }
    )
    answer = await answer_of(scene.client, frame, "extra")
    assert answer["status"] == 200, answer
    assert (answer["data"]["login"], answer["data"]["cmd"]) == (SPARE, 6)
    assert (await scene.client.ok("GetAccountByLogin", {"login": SPARE}))["balance"] == 7.0
    await assert_unharmed(scene)


async def test_request_written_one_byte_at_a_time(scene: Scene) -> None:
    """A valid deposit sent one byte per write is reassembled and answered exactly once."""
    frame = scene.fill(request("BalanceInSync", {"login": SPARE, "amount": 3}, "bytes")) + b"\r\n"
    future = scene.client.expect("bytes")
    for index in range(len(frame)):
        scene.client.send_raw(frame[index : index + 1])
        await scene.client.writer.drain()
    answer = await asyncio.wait_for(future, 5)
    assert (answer["status"], answer["data"]["profit"]) == (200, 3.0), answer
    assert (await scene.client.ok("GetAccountByLogin", {"login": SPARE}))["balance"] == 3.0
    assert (await scene.client.ok("MngGetTradesByFilter", {"login": SPARE}))["count"] == 1
    assert scene.client.orphans == []
    await assert_unharmed(scene)


async def test_mixed_bad_frames_pipelined_in_one_write(scene: Scene) -> None:
    """20,000 frames in one write, good and bad interleaved, are each answered once and in the
    order sent, the bad ones with their errors; the connection then still works."""
    kinds = [
        (b'{"command":"HealthCheck","extID":"h%d"}', "h%d", 200, None),
        (b'{"command":"Nope","extID":"u%d"}', "u%d", 404, "UNKNOWN_COMMAND"),
        (b'{"command":"BalanceIn","extID":"d%d","data":[1]}', "d%d", 400, "INVALID_REQUEST"),
        (b'{"command":"BalanceIn","extID":"j%d","data":{"amount":NaN}}', None, 400, "INVALID_JSON"),
    ]
    count = 20_000
    frames = [kinds[index % 4][0] % index for index in range(count)]
    reader, writer = await asyncio.open_connection("127.0.0.1", scene.gw.port)
    try:
        writer.write(b"\r\n".join(frames) + b"\r\n")
        for index in range(count):
            _, ext_id, status, error = kinds[index % 4]
            answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
            expected_id = None if ext_id is None else ext_id % index
            assert (answer["extID"], answer["status"], answer.get("error")) == (
                expected_id,
                status,
                error,
            ), index
        writer.write(b'{"command":"HealthCheck","extID":"after"}\r\n')
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert (answer["extID"], answer["status"]) == ("after", 200)
    finally:
        writer.close()
        await writer.wait_closed()
    await assert_unharmed(scene)


# ---------------------------------------------------------------- frames over the size limit


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(
            request("BalanceIn", {"login": LOGIN, "amount": 5, "comment": "x" * 5000}, "big"),
            id="deposit-over-the-limit",
        ),
        pytest.param(b"[" * 5000, id="unterminated-garbage-over-the-limit"),
        pytest.param(b"\xff" * 5000 + b"\r\n", id="invalid-utf8-over-the-limit"),
    ],
)
async def test_frame_over_the_limit(
    make_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory, frame: bytes
) -> None:
    """A frame over max_frame_bytes, terminated or not, is 413 with extID null and the
    connection closes; the session opened before goes on and no money moved."""
    gw = await start_seeded(make_gateway, tmp_path_factory, max_frame_bytes=4096)
    bystander = await gw.client()
    assert (await bystander.ok("GetGroups"))["count"] == 1
    client = await gw.client()
    assert (await client.ok("HealthCheck"))["status"] == "ok"
    client.send_raw(Scene(gw, client, bystander).fill(frame))
    await asyncio.wait_for(client.closed.wait(), 5)
    assert len(client.orphans) == 1, client.orphans
    check_error(client.orphans[0], 413, "FRAME_TOO_LARGE", None)
    account = await bystander.ok("GetAccountByLogin", {"login": LOGIN})
    assert (account["balance"], account["credit"]) == (0.0, 0.0)
    assert (await bystander.ok("MngGetTradesByFilter", {"login": LOGIN}))["count"] == 0
