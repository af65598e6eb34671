"""What a benchmark ran on: CPU, cores, memory, kernel, interpreter and library versions, commit.

Figures from a 2-core machine shared with other work mean little without this next to them.
Every probe is best effort: an unreadable file or a missing tool gives `None`, never an error.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from .processes import ROOT

_LIBRARIES = ("orjson", "uvloop", "pydantic", "psutil", "hdrhistogram", "matplotlib")


def machine_info(root: Path = ROOT) -> dict[str, Any]:
    """A JSON-ready description of this machine and the code under test."""
    memory = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_mb": round(memory.total / 2**20),
        "memory_available_mb": round(memory.available / 2**20),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "kernel": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "libraries": {name: library_version(name) for name in _LIBRARIES},
        "git": git_state(root),
    }


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def library_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_state(root: Path) -> dict[str, Any]:
    """The commit under test, its branch, and whether the tree had uncommitted changes."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode().strip() if done.returncode == 0 else None
