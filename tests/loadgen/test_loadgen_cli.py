"""The loadgen command line: arguments, messages and exit codes (0 clean, 1 failed, 2 usage)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import orjson
import pytest

from gateway_bench.loadgen import build_parser, main, spec_from_args

from .servers import WRONG_FIRST_LOGIN, answer_correctly, answer_wrongly, serving

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_arguments_build_the_spec() -> None:
    """Every option lands in its LoadSpec field."""
    args = build_parser().parse_args(
        [
            "--host",
            "::1",
            "--port",
            "9000",
            "--token",
            "tok",
            "--connections",
            "7",
            "--inflight",
            "2",
            "--requests",
            "500",
            "--warmup",
            "1.5",
            "--mix",
            "CreditInSync=3,GetAccountByLogin=1",
            "--accounts",
            "1",
            "--first-login",
            "5000",
            "--create-accounts",
            "--events",
            "--no-progress",
            "--timeout",
            "3",
        ]
    )
    spec = spec_from_args(args)
    assert (spec.host, spec.port, spec.token, spec.connections, spec.inflight) == (
        "::1",
        9000,
        "tok",
        7,
        2,
    )
    assert (spec.requests, spec.duration_s, spec.warmup_s, spec.rate) == (500, None, 1.5, None)
    assert spec.mix == {"CreditInSync": 3.0, "GetAccountByLogin": 1.0}
    assert (spec.accounts, spec.first_login, spec.create_accounts) == (1, 5000, True)
    assert (spec.events, spec.progress, spec.timeout_s) == (True, False, 3.0)
    spec.validate()


def test_open_loop_arguments_and_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--rate selects the open loop; without --token the token comes from GATEWAY_TOKEN."""
    monkeypatch.setenv("GATEWAY_TOKEN", "from-env")
    spec = spec_from_args(build_parser().parse_args(["--rate", "250", "--duration", "2"]))
    assert (spec.rate, spec.duration_s, spec.token, spec.closed_loop) == (
        250.0,
        2.0,
        "from-env",
        False,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --duration --requests is required"),
        (["--duration", "5", "--requests", "10"], "not allowed with"),
        (["--requests", "10", "--mix", "Nope=1"], "unknown command 'Nope'"),
        (["--requests", "10", "--mix", "CreditInSync=0"], "must be a positive number"),
        (["--requests", "10", "--mix", "CreditInSync=-1"], "must be a positive number"),
        (["--requests", "10", "--connections", "0"], "must be at least 1"),
        (["--requests", "10", "--inflight", "0"], "must be at least 1"),
        (["--requests", "10", "--rate", "0"], "must be more than 0"),
        (["--requests", "10", "--rate", "-3"], "must be more than 0"),
        (["--requests", "10", "--rate", "inf"], "must be more than 0"),
        (["--requests", "10", "--rate", "10", "--inflight", "2"], "not allowed with"),
        (["--requests", "0"], "must be at least 1"),
        (["--requests", "ten"], "not a whole number"),
        (["--duration", "0"], "must be more than 0"),
        (["--duration", "5", "--warmup", "-1"], "must be at least 0"),
        (["--duration", "5", "--accounts", "0"], "must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad argument exits 2 and says what is wrong on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_server_exits_1_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening on the port: exit 1, and stderr says it cannot connect."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    assert main(["--port", str(port), "--requests", "5", "--no-progress"]) == 1
    assert f"cannot connect to 127.0.0.1:{port}" in capsys.readouterr().err


async def run_cli(*argv: str) -> tuple[int, str]:
    """The CLI as a subprocess (it runs its own event loop): exit code and stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway_bench.loadgen",
        *argv,
        "--no-progress",
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def test_cli_against_a_wrong_server_exits_1_and_reports_why() -> None:
    """Errors and mismatches from a wrong server make the CLI exit 1, with both in the
    summary."""
    async with serving(answer_wrongly) as server:
        code, out = await run_cli(
            "--port",
            str(server.port),
            "--requests",
            "40",
            "--connections",
            "2",
            "--accounts",
            "4",
            "--first-login",
            str(WRONG_FIRST_LOGIN),
        )
    assert code == 1, out
    assert "errors: 500/INTERNAL_ERROR x10" in out and "login x10" in out


async def test_cli_clean_run_exits_0_and_writes_json_and_pngs(tmp_path: Path) -> None:
    """A clean run exits 0 and writes loadgen.json (figures, timeline, settings without the
    token) and two valid PNGs."""
    async with serving(answer_correctly) as server:
        code, out = await run_cli(
            "--port",
            str(server.port),
            "--requests",
            "50",
            "--connections",
            "2",
            "--mix",
            "CreditInSync=1,BalanceOut=1,GetAccountByLogin=1",
            "--token",
            "sekrit",
            "--out",
            str(tmp_path),
        )
    assert code == 0, out
    assert "50 requests" in out and "errors: none" in out
    report = orjson.loads((tmp_path / "loadgen.json").read_bytes())
    for key in (
        "requests",
        "ok",
        "errors",
        "mismatches",
        "mismatch_examples",
        "orphans",
        "events_received",
        "duration_s",
        "rps",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "mean_ms",
        "timeline",
        "spec",
    ):
        assert key in report, key
    assert (report["requests"], report["ok"], report["errors"]) == (50, 50, {})
    assert (
        report["spec"]["token"] == "<set>"
        and b"sekrit" not in (tmp_path / "loadgen.json").read_bytes()
    )
    for name in ("loadgen-timeline.png", "loadgen-latency.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
