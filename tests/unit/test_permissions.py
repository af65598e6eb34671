"""The dispatch table against the role table of docs/protocol.md section 3, written out as data."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import orjson
import pytest

from manager_gateway.commands.context import Services
from manager_gateway.commands.dispatch import prepare
from manager_gateway.commands.registry import ALL_COMMANDS, COMMANDS, HEALTH_CHECK
from manager_gateway.protocol.codec import parse_request
from manager_gateway.session.access import SessionType
from manager_gateway.session.session import Session
from manager_gateway.session.tokens import TokenService

from ..fakes import FakeClock
from ..protocol_tables import (
    FINANCE,
    PROTOCOL_ROLES,
    STATE_CHANGING,
)

#: Every row but HealthCheck's, which has no row in the gateway's table (see below).
TABLE_ROWS = sorted(set(PROTOCOL_ROLES) - {HEALTH_CHECK})


def test_command_set_matches_protocol() -> None:
    """The gateway implements exactly the commands docs/protocol.md lists, no more and no fewer."""
    assert set(ALL_COMMANDS) == set(PROTOCOL_ROLES)
    assert len(PROTOCOL_ROLES) == 23


def test_health_check_is_outside_the_role_table() -> None:
    """HealthCheck is answered before authentication, so it has no row in COMMANDS."""
    assert HEALTH_CHECK == "HealthCheck"
    assert HEALTH_CHECK not in COMMANDS
    assert HEALTH_CHECK in ALL_COMMANDS
    assert set(COMMANDS) == set(PROTOCOL_ROLES) - {HEALTH_CHECK}


@pytest.mark.parametrize("session_type", list(SessionType), ids=lambda t: t.name)
@pytest.mark.parametrize("command", TABLE_ROWS)
def test_role_table_cell(command: str, session_type: SessionType) -> None:
    """Each (command, session type) cell matches docs/protocol.md section 3."""
    allowed = session_type in COMMANDS[command].roles
    assert allowed is (session_type in PROTOCOL_ROLES[command])


@pytest.mark.parametrize(
    "session_type", [None, *SessionType], ids=lambda t: "no-token" if t is None else t.name
)
def test_health_check_is_answered_for_every_session_type(
    tokens: TokenService, session_type: SessionType | None
) -> None:
    """The dispatcher answers HealthCheck 200 without a token and with a valid token of every
    session type, SYSTEM and FIX included (sections 3.2 and 3.5), and binds that token."""
    clock = FakeClock()
    services = cast(Services, SimpleNamespace(clock=clock))  # HealthCheck uses only the clock
    request: dict[str, object] = {"command": HEALTH_CHECK, "extID": "hc", "data": {}}
    if session_type is not None:
        request["__token"] = tokens.issue("7", session_type, ["*"], int(clock.wall()) + 60)
    session = Session()
    frame = prepare(services, tokens, session, "conn", parse_request(orjson.dumps(request)))
    assert isinstance(frame, bytes)
    assert orjson.loads(frame) == {
        "extID": "hc",
        "status": 200,
        "data": {"status": "ok", "time": int(clock.wall() * 1000)},
    }
    bound = session.access.type if session.access is not None else None
    assert bound is session_type


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_system_and_fix_allowed_nowhere(command: str) -> None:
    """SYSTEM (4) and FIX (5) sessions may run no command on this API."""
    roles = COMMANDS[command].roles
    assert SessionType.SYSTEM not in roles
    assert SessionType.FIX not in roles


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_roles_exactly(command: str) -> None:
    """The allowed set of each row is exactly the protocol's set."""
    assert set(COMMANDS[command].roles) == set(PROTOCOL_ROLES[command])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_changes_state_exactly(command: str) -> None:
    """`changes_state` is True for the finance commands, their deletes and AddUser only."""
    assert COMMANDS[command].changes_state is (command in STATE_CHANGING)


def test_state_changing_set() -> None:
    """The set of state-changing rows is exactly the 13 of docs/protocol.md section 7."""
    assert {name for name, spec in COMMANDS.items() if spec.changes_state} == STATE_CHANGING
    assert len(STATE_CHANGING) == 13


def test_sync_forms_share_the_async_model() -> None:
    """A `*Sync` command takes the same data as its async form."""
    for name in [*FINANCE[:4], "DeleteBalance", "DeleteCredit"]:
        assert COMMANDS[name + "Sync"].model is COMMANDS[name].model
        assert COMMANDS[name + "Sync"].handler is not COMMANDS[name].handler
