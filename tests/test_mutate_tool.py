"""tools/mutate: its module -> tests table points at real files, --list runs no mutation, and
the rule that judges SQL-case mutants equivalent takes those and no others."""

from __future__ import annotations

import ast
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
    """An unknown --function or test file, or --function or --tests with more than one module,
    stops before any run."""
    waiters = "src/manager_gateway/waiters.py"
    for args, message in (
        ([waiters, "--function", "Nope.nothing"], "defines no function"),
        (["src/manager_gateway/session/", "--function", "check"], "exactly one module"),
        (["src/manager_gateway/session/", "--tests", "tests/unit/test_access.py"], "one module"),
        ([waiters, "--tests", "tests/unit/test_nope.py::test_x"], "no test file"),
    ):
        done = subprocess.run(
            [sys.executable, str(TOOL), "--list", *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode != 0
        assert message in done.stderr


def function_of(source: str) -> ast.AST:
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
    return node


def test_only_a_case_change_of_plain_sql_text_is_judged_equivalent() -> None:
    """The rule takes a mutant that changes nothing but the case of an SQL string, and leaves
    to be run every mutant whose case change could matter or that changes anything more."""
    judge = load_tool().sql_case_change
    original = function_of(
        "async def f__mutmut_orig(db, login):\n"
        "    row = await db.fetchrow('SELECT balance FROM accounts WHERE login = $1', login)\n"
        "    return row['balance']\n"
    )

    def mutant(body_line: str, result: str = "row['balance']") -> ast.AST:
        return function_of(
            f"async def f__mutmut_1(db, login):\n    row = {body_line}\n    return {result}\n"
        )

    sql = "SELECT balance FROM accounts WHERE login = $1"
    lower = mutant(f"await db.fetchrow({sql.lower()!r}, login)")
    assert judge(original, lower) == sql
    assert judge(original, mutant(f"await db.fetchrow({sql.upper()!r}, login)")) == sql

    # A Python-side key is case-sensitive: no SQL keyword, so it is run.
    assert judge(original, mutant(f"await db.fetchrow({sql!r}, login)", "row['BALANCE']")) is None
    # More than the case, or the case and something else: run.
    assert judge(original, mutant(f"await db.fetchrow('XX{sql}XX', login)")) is None
    both = mutant(f"await db.fetchrow({sql.lower()!r}, None)")
    assert judge(original, both) is None
    assert judge(original, original) is None

    fragment = " AND created_at < ?"  # a piece of a query built in steps
    before = function_of(f"def h__mutmut_orig(query):\n    return query + {fragment!r}\n")
    after = function_of(f"def h__mutmut_3(query):\n    return query + {fragment.lower()!r}\n")
    assert judge(before, after) == fragment

    for text in (
        "SELECT name FROM accounts WHERE grp = 'VIP'",  # a quoted literal
        'SELECT "Login" FROM accounts',  # a quoted identifier
        "SELECT {columns} FROM accounts",  # a format field
        "SELECT login FROM accounts WHERE name LIKE %s",  # a placeholder of another style
        "select balance from accounts",  # no upper-case keyword: not written as SQL here
    ):
        before = function_of(f"def g__mutmut_orig(db):\n    return db.execute({text!r})\n")
        after = function_of(f"def g__mutmut_2(db):\n    return db.execute({text.swapcase()!r})\n")
        assert judge(before, after) is None, text
