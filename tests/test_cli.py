"""`manager-gateway token`, `ledger verify` and `serve` start-up errors, run as real processes."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.verify import verify_ledger
from manager_gateway.session.access import SessionType
from manager_gateway.session.tokens import SECRET_FILE, TokenService

from .conftest import DEMO_USER, GatewayFactory

CLI_TIMEOUT_S = 30


def cli(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `manager-gateway ARGS` with the test interpreter; bounded, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "manager_gateway.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def make_ledger(make_gateway: GatewayFactory, data_dir: Path) -> list[int]:
    """A consistent ledger in `data_dir`: two accounts with some history; returns their logins."""
    gw = await make_gateway(data_dir=data_dir)
    client = await gw.client()
    logins = [8001, 8002]
    for login in logins:
        await client.ok("AddUser", {**DEMO_USER, "login": login}, ext_id=f"add-{login}")
    await client.ok("BalanceInSync", {"login": 8001, "amount": 100.0}, ext_id="b1")
    await client.ok("BalanceOutSync", {"login": 8001, "amount": -30.0}, ext_id="b2")
    record = await client.ok(
        "CreditInSync", {"login": 8002, "amount": 12.5, "comment": "c"}, ext_id="c1"
    )
    await client.ok("DeleteCreditSync", {"order": record["order"]}, ext_id="d1")
    await gw.close_clients()
    await gw.gateway.shutdown()
    return logins


def test_token_is_signed_with_the_data_dir_secret(tmp_path: Path) -> None:
    """`token` prints a JWT the server's secret verifies, with the asked role, groups and ttl."""
    data_dir = tmp_path / "data"
    before = int(time.time())
    done = cli(
        "token",
        "--data-dir",
        data_dir,
        "--login",
        "42",
        "--role",
        "dealer",
        "--groups",
        "demo, vip*",
        "--ttl-s",
        "600",
        cwd=tmp_path,
    )
    after = int(time.time())
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    secret_file = data_dir / SECRET_FILE
    assert secret_file.stat().st_mode & 0o777 == 0o600
    access = TokenService(secret_file.read_bytes().strip()).verify(token, time.time())
    assert (access.subject, access.type, access.groups) == (
        "42",
        SessionType.DEALER,
        ("demo", "vip*"),
    )
    assert before + 600 <= access.expires_at <= after + 600


async def test_token_is_accepted_by_the_server(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    """A token printed by `token` for the data dir opens an admin session on a gateway there."""
    data_dir = tmp_path / "data"
    done = cli("token", "--data-dir", data_dir, "--login", "1", "--role", "admin", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    gw = await make_gateway(data_dir=data_dir)
    client = await gw.client(token=done.stdout.strip().splitlines()[-1])
    added = await client.ok("AddUser", {**DEMO_USER, "login": 8101}, ext_id="add-8101")
    assert added == {"login": 8101, "leverage": 100, "currency": "USD"}
    groups = await client.ok("GetGroups")
    assert [row["group"] for row in groups["rows"]] == ["demo"]


def test_token_with_a_user_role_has_its_own_type(tmp_path: Path) -> None:
    """`--role user` gives a USER token with the default `*` groups and a day's lifetime."""
    data_dir = tmp_path / "data"
    before = int(time.time())
    done = cli("token", "--data-dir", data_dir, "--login", "1001", "--role", "user", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    secret = (data_dir / SECRET_FILE).read_bytes().strip()
    access = TokenService(secret).verify(done.stdout.strip(), time.time())
    assert (access.subject, access.type, access.groups) == ("1001", SessionType.USER, ("*",))
    assert before + 86400 <= access.expires_at <= int(time.time()) + 86400


async def test_ledger_verify_passes_on_a_consistent_ledger(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    """`ledger verify` exits 0 and says so on a ledger written by the gateway."""
    data_dir = tmp_path / "data"
    await make_ledger(make_gateway, data_dir)
    done = cli("ledger", "verify", "--data-dir", data_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "accounts=2 orders=3 next_order=4 idempotency_keys=6 settlement_journal=0",
        "ledger consistent",
    ]


def tamper(data_dir: Path, sql: str) -> None:
    """Change the ledger behind the gateway's back."""
    db = sqlite3.connect(data_dir / LEDGER_FILE)
    try:
        with db:
            db.execute(sql)
    finally:
        db.close()


async def test_ledger_verify_reports_a_tampered_balance(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    """A balance edited behind the gateway's back: non-zero exit and a MISMATCH line."""
    data_dir = tmp_path / "data"
    await make_ledger(make_gateway, data_dir)
    tamper(data_dir, "UPDATE accounts SET balance = '1000.00' WHERE login = 8001")
    done = cli("ledger", "verify", "--data-dir", data_dir, cwd=tmp_path)
    assert done.returncode == 1
    mismatches = [line for line in done.stdout.splitlines() if line.startswith("MISMATCH")]
    assert mismatches == ["MISMATCH account 8001: balance 1000.00, records sum to 70.00"]
    assert "ledger inconsistent: 1 problem(s)" in done.stderr


async def test_ledger_verify_reports_a_deleted_record_version(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    """Removing the deleting version of a record breaks the credit sum: reported, non-zero."""
    data_dir = tmp_path / "data"
    await make_ledger(make_gateway, data_dir)
    tamper(data_dir, "DELETE FROM records WHERE login = 8002 AND version = 2")
    done = cli("ledger", "verify", "--data-dir", data_dir, cwd=tmp_path)
    assert done.returncode == 1
    mismatches = [line for line in done.stdout.splitlines() if line.startswith("MISMATCH")]
    assert mismatches == ["MISMATCH account 8002: credit 0.00, records sum to 12.50"]


def test_ledger_verify_on_an_empty_dir_fails_clearly(tmp_path: Path) -> None:
    """No ledger to check is a failure naming the missing file, not a fresh empty ledger."""
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cli("ledger", "verify", "--data-dir", empty, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stdout.splitlines() == [
        "nothing to verify",
        f"MISMATCH no ledger at {empty / LEDGER_FILE}",
    ]
    assert list(empty.iterdir()) == []
    # In this process too, where mutation testing sees a changed line of verify.py.
    assert verify_ledger(empty) == ([f"no ledger at {empty / LEDGER_FILE}"], "nothing to verify")


def test_serve_with_a_missing_config_file_exits_with_a_message(tmp_path: Path) -> None:
    """`serve --config missing.toml` exits non-zero at once and names the missing file."""
    done = cli(
        "serve",
        "--config",
        "missing.toml",
        "--data-dir",
        tmp_path / "data",
        "--port",
        "0",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "manager-gateway: config file not found: missing.toml" in done.stderr.splitlines()
    assert "listening" not in done.stdout


def test_serve_with_the_metrics_port_taken_exits_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GATEWAY_METRICS_PORT reaches `serve`; a port in use there is a start-up error (exit 2)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("GATEWAY_METRICS_PORT", str(taken.getsockname()[1]))
        done = cli(
            "serve",
            "--data-dir",
            tmp_path / "data",
            "--port",
            "0",
            "--settlement-port",
            "0",
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert "Address already in use" in done.stderr
    assert "listening" not in done.stdout


def test_serve_with_an_unreachable_postgresql_exits_with_a_message(tmp_path: Path) -> None:
    """A ledger_url nothing answers at: exit 2 at once, the reason in one line, no traceback."""
    with socket.socket() as closed:  # a port free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = cli(
        "serve", "--data-dir", tmp_path / "data", "--port", "0", "--settlement-port", "0",
        cwd=tmp_path,
        env={**os.environ, "GATEWAY_LEDGER_URL": f"postgresql://gateway@127.0.0.1:{port}/db"},
    )  # fmt: skip
    assert done.returncode == 2
    message = done.stderr.splitlines()[-1]
    assert message.startswith("manager-gateway: cannot connect to the ledger to migrate it:")
    assert "Traceback" not in done.stderr
