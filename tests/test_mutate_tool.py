"""tools/mutate: its module -> tests table points at real files, and --list runs no mutation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "mutate.py"


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def exists(path: str) -> bool:
    """A file, or a test in one (`file::test`, pytest's node id)."""
    file, _, test = path.partition("::")
    if not (ROOT / file).is_file():
        return False
    return not test or f"def {test}(" in (ROOT / file).read_text()


def test_table_names_only_existing_modules_and_tests() -> None:
    """Every module in the table and every test path (or single test) it maps to exists."""
    table = load_tool().TESTS
    assert table
    missing = [p for m, tests in table.items() for p in (m, *tests) if not exists(p)]
    assert missing == []


def test_list_prints_the_table_without_running_mutmut() -> None:
    """--list with a package prints that package's rows and starts no mutation run."""
    done = subprocess.run(
        [sys.executable, str(TOOL), "--list", "src/manager_gateway/session/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].startswith("src/manager_gateway/session/access.py: tests/unit/test_access.py")
    assert all(row.startswith("src/manager_gateway/session/") for row in rows)


def test_unknown_module_is_refused() -> None:
    """A module outside the table is refused with a message, not silently skipped."""
    done = subprocess.run(
        [sys.executable, str(TOOL), "--list", "src/manager_gateway/nope.py"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "no core module" in done.stderr


def test_function_patterns_select_exactly_that_function_s_mutants() -> None:
    """--function's patterns match mutmut's names for that method or function and no other,
    and the tool's own name parser reads them back."""
    tool = load_tool()
    mainloop = "src/manager_gateway/runtime/mainloop.py"
    method, function = tool.function_patterns(mainloop, ["MainLoop._lookup", "_stamp"])
    name = "manager_gateway.runtime.mainloop.xǁMainLoopǁ_lookup__mutmut_7"
    assert fnmatch(name, method)
    assert not fnmatch(name.replace("_lookup", "_lookup_all"), method)
    assert not fnmatch(name.replace("MainLoop", "Other"), method)
    parsed = tool.MUTANT_NAME.match(name)
    assert parsed is not None and (parsed["cls"], parsed["method"]) == ("MainLoop", "_lookup")

    assert fnmatch("manager_gateway.runtime.mainloop.x__stamp__mutmut_2", function)
    assert not fnmatch("manager_gateway.runtime.state.x__stamp__mutmut_2", function)


def test_function_the_module_lacks_or_two_modules_are_refused() -> None:
    """An unknown --function, or --function with more than one module, stops before any run."""
    for args, message in (
        (["src/manager_gateway/waiters.py", "--function", "Nope.nothing"], "defines no function"),
        (["src/manager_gateway/session/", "--function", "check"], "exactly one module"),
    ):
        done = subprocess.run(
            [sys.executable, str(TOOL), "--list", *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode != 0
        assert message in done.stderr
