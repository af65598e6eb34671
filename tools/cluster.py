"""tools/cluster: a throwaway PostgreSQL and three gateway nodes on it, in one command.

Starts PostgreSQL from the `pgserver` wheel in a temporary directory, creates a `gateway`
database, starts `manager-gateway serve` three times on consecutive ports (TCP 8080, 8081,
8082 and settlement 8090, 8091, 8092 by default) with one shared JWT secret, prints how to
connect, and on Ctrl-C (or SIGTERM) stops the nodes, then PostgreSQL, and deletes it all.
config/haproxy.cfg balances the three TCP ports behind one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

LISTENING = re.compile(rb"manager-gateway listening on .*:(\d+)")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def start_node(
    n: int, args: argparse.Namespace, url: str, secret: str, root: Path
) -> subprocess.Popen[bytes]:
    data_dir = root / f"node{n}"
    env = {**os.environ, "GATEWAY_LEDGER_URL": url, "GATEWAY_JWT_SECRET": secret}
    log = (root / f"node{n}.log").open("ab")
    node = subprocess.Popen(
        [
            sys.executable, "-m", "manager_gateway.cli", "serve",
            "--data-dir", str(data_dir),
            "--host", args.host,
            "--port", str(args.port + n),
            "--settlement-port", str(args.settlement_port + n),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )  # fmt: skip
    return node


def wait_listening(node: subprocess.Popen[bytes], n: int, root: Path) -> None:
    assert node.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = node.stdout.readline()
        if not line:
            break
        if LISTENING.match(line):
            return
    log = (root / f"node{n}.log").read_text()
    raise SystemExit(f"node {n} did not start; its log:\n{log}")


def stop(nodes: list[subprocess.Popen[bytes]]) -> None:
    for node in nodes:
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the cluster as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument("--host", default="127.0.0.1", help="where the nodes listen")
    parser.add_argument("--port", type=int, default=8080, help="the first node's TCP port")
    parser.add_argument(
        "--settlement-port", type=int, default=8090, help="the first node's settlement port"
    )
    args = parser.parse_args(argv)

    import pgserver  # the `cluster` extra: PostgreSQL's binaries from PyPI

    signal.signal(signal.SIGTERM, _interrupted)
    with tempfile.TemporaryDirectory(prefix="gateway-cluster-") as tmp:
        root = Path(tmp)
        database = pgserver.get_server(root / "postgres", cleanup_mode="stop")
        nodes: list[subprocess.Popen[bytes]] = []
        try:
            with psycopg.connect(database.get_uri(), autocommit=True) as admin:
                admin.execute("CREATE DATABASE gateway")
            url = with_database(database.get_uri(), "gateway")
            secret = secrets.token_urlsafe(32)
            # One node first, so it alone applies the migrations; the others find them done.
            nodes.append(start_node(0, args, url, secret, root))
            wait_listening(nodes[0], 0, root)
            for n in range(1, args.nodes):
                nodes.append(start_node(n, args, url, secret, root))
            for n, node in enumerate(nodes[1:], 1):
                wait_listening(node, n, root)
            token = subprocess.run(
                [sys.executable, "-m", "manager_gateway.cli", "token", "--data-dir",
                 str(root / "node0"), "--login", "1", "--role", "manager"],
                env={**os.environ, "GATEWAY_JWT_SECRET": secret},
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]  # fmt: skip
            print_how_to_connect(args, url, token, root)
            while all(node.poll() is None for node in nodes):
                time.sleep(0.5)
            print("a node exited; stopping the cluster (logs were in the temporary directory)")
            for n, node in enumerate(nodes):
                if node.poll() is not None:
                    print(f"--- node {n} log ---\n{(root / f'node{n}.log').read_text()[-4000:]}")
            return 1
        except KeyboardInterrupt:
            print("\nstopping the nodes, then PostgreSQL")
            return 0
        finally:
            stop(nodes)
            database.cleanup()


def nc_line(host: str, port: int, request: dict[str, object], wait_s: int = 1) -> str:
    """A shell line that sends one request with nc and shows what comes back for `wait_s`."""
    frame = json.dumps(request, separators=(",", ":"))
    return f"(printf '%s\\r\\n' '{frame}'; sleep {wait_s}) | nc {host} {port}"


def print_how_to_connect(args: argparse.Namespace, url: str, token: str, root: Path) -> None:
    ports = [args.port + n for n in range(args.nodes)]
    settlement = [args.settlement_port + n for n in range(args.nodes)]
    ann = {
        "login": 1001, "group": "demo", "name": "Ann", "password": "secret123",
        "leverage": 100, "enable": 1, "email": "ann@example.com",
    }  # fmt: skip
    listen = {"command": "HealthCheck", "extID": "h", "__token": token}
    create = {"command": "AddUser", "extID": "u1", "data": ann, "__token": token}
    credit = {
        "command": "CreditInSync", "extID": "c1", "__token": token,
        "data": {"login": 1001, "amount": 300.0, "comment": "Promotion credit"},
    }  # fmt: skip
    print(
        f"""
A gateway cluster: {args.nodes} nodes on one PostgreSQL.

  TCP API     {", ".join(f"{args.host}:{p}" for p in ports)}
  settlement  {", ".join(f"http://{args.host}:{p}/api" for p in settlement)}
  PostgreSQL  {url}
  logs        {root}/node*.log

A manager token, valid on every node (all groups, 24 h):
  {token}

Listen on the last node, create an account on the first, credit it on the second: the listener
sees the event. Each line in a terminal of its own:
  {nc_line(args.host, ports[-1], listen, 60)}
  {nc_line(args.host, ports[0], create)}
  {nc_line(args.host, ports[1 % len(ports)], credit)}

One address for all of them: haproxy -f config/haproxy.cfg (listens on :9080).
Ctrl-C stops everything and deletes the database.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
