"""The servers a benchmark measures, as child processes: the gateway and the baseline server.

Each server writes everything it prints (the `listening on HOST:PORT` line, its JSON logs) to a
log file, never to a pipe: a pipe nobody drains fills up and stalls the server mid-measurement.
The start-up line is found by polling that file. A server is stopped with SIGTERM and waited for
(the gateway then drains and commits), with SIGKILL only when it does not exit in time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

ROOT = Path(__file__).resolve().parents[2]
BASELINE_SCRIPT = ROOT / "tools" / "baseline_server.py"
GATEWAY_READY = re.compile(rb"manager-gateway listening on (\S+):(\d+)")
BASELINE_READY = re.compile(rb"baseline-server listening on (\S+):(\d+)")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0  # the gateway answers what is in flight and commits before it exits
_POLL_S = 0.02


class ProcessError(RuntimeError):
    """A server did not start (or a helper command failed); the message says why."""


@dataclass
class ServerProcess:
    """A running server: where it listens, where it logs, and its memory."""

    name: str
    popen: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path
    exit_code: int | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_bytes(self) -> int:
        """Resident memory of the server process now."""
        return int(psutil.Process(self.popen.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process has used so far."""
        times = psutil.Process(self.popen.pid).cpu_times()
        return float(times.user + times.system)

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait; SIGKILL if it has not exited after `timeout_s`. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.exit_code = self.popen.returncode
        return self.exit_code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class GatewayProcess(ServerProcess):
    data_dir: Path = Path()
    settings: dict[str, str] = field(default_factory=dict)

    def mint_token(self, login: int = 1, role: str = "manager") -> str:
        return mint_token(self.data_dir, login=login, role=role, settings=self.settings)

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.db"


def gateway_command(*args: str) -> list[str]:
    """`manager-gateway ARGS` from the running interpreter's environment."""
    script = Path(sys.executable).parent / "manager-gateway"
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", "manager_gateway.cli", *args]


def gateway_env(settings: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without inherited `GATEWAY_*` settings, plus `settings`
    (names without the prefix, e.g. {"sync_timeout_ms": "300"}), so a run is reproducible."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    for name, value in (settings or {}).items():
        env[f"GATEWAY_{name.upper()}"] = str(value)
    return env


def start_gateway(
    data_dir: Path,
    log_path: Path,
    settings: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> GatewayProcess:
    """`manager-gateway serve` on a free port with `data_dir`, logs (JSON lines) to `log_path`."""
    # The settlement listener is off unless asked for: its default port would be shared.
    settings = {"log_format": "json", "settlement_port": "0", **(settings or {})}
    command = gateway_command("serve", "--data-dir", str(data_dir), "--host", host, "--port", "0")
    popen, offset = _spawn(command, log_path, gateway_env(settings))
    bound_host, port = _wait_ready(
        popen, log_path, offset, GATEWAY_READY, "gateway", ready_timeout_s
    )
    return GatewayProcess(
        "gateway", popen, bound_host, port, log_path, data_dir=data_dir, settings=settings
    )


def start_baseline(
    log_path: Path, host: str = "127.0.0.1", ready_timeout_s: float = READY_TIMEOUT_S
) -> ServerProcess:
    """tools/baseline_server.py on a free port, output to `log_path`."""
    command = [sys.executable, str(BASELINE_SCRIPT), "--host", host, "--port", "0"]
    popen, offset = _spawn(command, log_path, gateway_env())
    bound_host, port = _wait_ready(
        popen, log_path, offset, BASELINE_READY, "baseline", ready_timeout_s
    )
    return ServerProcess("baseline", popen, bound_host, port, log_path)


def mint_token(
    data_dir: Path, login: int = 1, role: str = "manager", settings: dict[str, str] | None = None
) -> str:
    """A token signed with the server's secret (`manager-gateway token` with its settings: the
    one in `data_dir`, or `jwt_secret` when they set it)."""
    command = gateway_command(
        "token", "--data-dir", str(data_dir), "--login", str(login), "--role", role
    )
    done = subprocess.run(
        command, capture_output=True, env=gateway_env(settings), timeout=60, check=False
    )
    lines = done.stdout.decode().split()
    if done.returncode != 0 or not lines:
        raise ProcessError(
            f"manager-gateway token failed ({done.returncode}): {done.stderr.decode().strip()}"
        )
    return lines[-1]


def _spawn(
    command: list[str], log_path: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `command` appending to `log_path`; returns it and where its output begins."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        offset = log.tell()
        # The child keeps its own descriptor of the log file; ours is closed on leaving.
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    return popen, offset


def _wait_ready(
    popen: subprocess.Popen[bytes],
    log_path: Path,
    offset: int,
    pattern: re.Pattern[bytes],
    name: str,
    timeout_s: float,
) -> tuple[str, int]:
    """Poll the log from `offset` until `pattern` (host, port) shows up."""
    deadline = time.monotonic() + timeout_s
    while True:
        with log_path.open("rb") as log:
            log.seek(offset)
            text = log.read()
        found = pattern.search(text)
        if found:
            return found.group(1).decode().strip("[]"), int(found.group(2))  # [v6 address]
        if popen.poll() is not None:
            raise ProcessError(
                f"{name} exited with {popen.returncode} before listening; see {log_path}:\n"
                + _tail(text)
            )
        if time.monotonic() > deadline:
            popen.kill()
            popen.wait()
            raise ProcessError(f"{name} not listening after {timeout_s:g} s; see {log_path}")
        time.sleep(_POLL_S)


def _tail(text: bytes, lines: int = 10) -> str:
    return "\n".join(text.decode(errors="replace").splitlines()[-lines:])
