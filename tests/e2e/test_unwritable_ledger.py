"""A ledger that becomes unwritable under a running gateway (a read-only remount, a file made
immutable): writes are refused cleanly and the gateway recovers when the file is writable again.

File permissions do not stop root, which this suite may run as, so the file is made immutable
(`chattr +i`), which stops everyone, even through file descriptors already open. Where that is
not possible (no chattr, a filesystem without the attribute, no CAP_LINUX_IMMUTABLE: a container
without that capability, a non-root user) the test fails and says why, rather than skipping
where nobody looks: deselect it explicitly (`-k "not unwritable_ledger"`) on such a machine.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from manager_gateway.ledger.sqlite import LEDGER_FILE
from manager_gateway.ledger.verify import verify_ledger

from ..conftest import GatewayFactory

CANNOT_RUN_HERE = (
    "this test needs `chattr +i` on the ledger (root with CAP_LINUX_IMMUTABLE, on a filesystem"
    ' with the immutable attribute); deselect it explicitly with -k "not unwritable_ledger"'
)


def _chattr(flag: str, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.fail(f"chattr is not installed: {CANNOT_RUN_HERE}")
    return subprocess.run([chattr, flag, *map(str, paths)], capture_output=True, text=True)


@contextmanager
def immutable(paths: list[Path]) -> Iterator[None]:
    made = _chattr("+i", paths)
    if made.returncode != 0:
        pytest.fail(f"chattr +i failed ({made.stderr.strip()}): {CANNOT_RUN_HERE}")
    try:
        yield
    finally:
        unmade = _chattr("-i", paths)
        assert unmade.returncode == 0, f"chattr -i failed, the files stay immutable: {unmade}"


async def test_unwritable_ledger_refuses_writes_then_recovers(make_gateway: GatewayFactory) -> None:
    """While the ledger's files cannot be written, a credit and a Sync credit are answered 500
    "nothing was applied" and reads still answer; once writable again, the same requests
    succeed and the ledger verifies."""
    gw = await make_gateway()
    client = await gw.client()
    await gw.add_user(client, 1001)
    await client.ok("CreditIn", {"login": 1001, "amount": 1.0, "comment": "before"})
    # The database and its write-ahead log. Not the -shm index: SQLite maps it into memory, and
    # a store to a mapped page of an immutable file is a SIGBUS, which no server survives (a real
    # read-only remount refuses to happen while the file is open for writing).
    files = [gw.data_dir / LEDGER_FILE, gw.data_dir / f"{LEDGER_FILE}-wal"]
    credit = {"login": 1001, "amount": 40.0, "comment": "bonus"}
    with immutable(files):
        for command, ext_id in (("CreditIn", "ro-1"), ("CreditInSync", "ro-2")):
            answer = await client.request(command, credit, ext_id=ext_id)
            assert (answer["status"], answer["error"]) == (500, "INTERNAL_ERROR"), answer
            assert "nothing was applied" in answer["message"]
        account = await client.ok("GetAccountByLogin", {"login": 1001})
        assert account["credit"] == 1.0
    assert (await client.ok("CreditIn", credit, ext_id="ro-1"))["amount"] == 40.0
    assert (await client.ok("CreditInSync", credit, ext_id="ro-2"))["profit"] == 40.0
    assert (await client.ok("GetAccountByLogin", {"login": 1001}))["credit"] == 81.0
    assert verify_ledger(gw.data_dir)[0] == []
