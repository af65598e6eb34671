"""The bench's process helpers against real gateway and baseline subprocesses."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest

from gateway_bench.machine import machine_info
from gateway_bench.processes import (
    ProcessError,
    gateway_env,
    mint_token,
    start_baseline,
    start_gateway,
)


def roundtrip(port: int, request: dict[str, object]) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(orjson.dumps(request) + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "connection closed before an answer"
            reply += chunk
    answer: dict[str, object] = orjson.loads(reply)
    return answer


def test_gateway_env_drops_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the settings given reach the gateway, not GATEWAY_* from the caller's shell."""
    monkeypatch.setenv("GATEWAY_SYNC_TIMEOUT_MS", "1")
    env = gateway_env({"max_inflight": "7"})
    assert "GATEWAY_SYNC_TIMEOUT_MS" not in env
    assert env["GATEWAY_MAX_INFLIGHT"] == "7"


@pytest.mark.slow
def test_gateway_starts_answers_a_minted_token_and_stops_cleanly(tmp_path: Path) -> None:
    """A gateway on a free port accepts a minted manager token, has RSS, and exits 0."""
    log = tmp_path / "gateway.log"
    with start_gateway(tmp_path / "data", log, {"sync_timeout_ms": "300"}) as gateway:
        assert gateway.port > 0 and gateway.rss_bytes() > 0
        token = gateway.mint_token()
        answer = roundtrip(gateway.port, {"command": "GetGroups", "extID": "g", "__token": token})
        assert answer["status"] == 200
    assert gateway.exit_code == 0
    assert b"manager-gateway listening on" in log.read_bytes()
    assert gateway.settings["sync_timeout_ms"] == "300"


@pytest.mark.slow
def test_baseline_starts_and_answers(tmp_path: Path) -> None:
    """The baseline server is found, answers a request, and stops on SIGTERM."""
    with start_baseline(tmp_path / "baseline.log") as baseline:
        answer = roundtrip(
            baseline.port,
            {
                "command": "CreditInSync",
                "extID": "b",
                "data": {"login": 5, "amount": 1.0, "comment": "x"},
            },
        )
        assert answer["status"] == 200 and answer["extID"] == "b"
    assert not baseline.is_running()


def test_a_gateway_that_cannot_start_is_reported(tmp_path: Path) -> None:
    """A bad setting makes start_gateway raise with the log's tail, not hang."""
    with pytest.raises(ProcessError, match="exited"):
        start_gateway(tmp_path / "data", tmp_path / "gw.log", {"max_inflight": "zero"})


def test_mint_token_creates_and_uses_the_data_dirs_secret(tmp_path: Path) -> None:
    """A token for a data dir is signed with (or creates) that dir's secret."""
    token = mint_token(tmp_path / "fresh")
    assert token.count(".") == 2


def test_machine_info_has_the_basics() -> None:
    """The machine description names cores, memory, python and the git commit field."""
    info = machine_info()
    assert info["cpu_count_logical"] >= 1 and info["memory_total_mb"] > 0
    assert info["python"] and "commit" in info["git"]
    assert set(info["libraries"]) >= {"orjson", "uvloop"}
