"""Mutation testing of the gateway's core with mutmut 3: a score per module and every survivor.

    tools/mutate                                  # every core module in TESTS (an hour or more)
    tools/mutate src/manager_gateway/waiters.py   # one module
    tools/mutate src/manager_gateway/session/     # every module of a package
    tools/mutate src/manager_gateway/runtime/mainloop.py --function MainLoop._lookup
                                                  # one function's mutants only (a changed one)
    tools/mutate src/manager_gateway/ledger/postgres.py --function PostgresLedger._listen \
        --tests tests/e2e/test_nodes.py           # ... against these tests instead of the table's
    tools/mutate --list                           # the module -> tests table; runs nothing

Each module is tested in its own scratch copy of the working tree (tracked and untracked files that
git does not ignore) under `var/mutate/work/`, where mutmut makes its own `mutants/` copy: nothing
in the tree other engineers run tests from is ever changed. mutmut is told to mutate that module
only and to run the tests listed for it in TESTS; of those, it runs for each mutant only the tests
that reached the mutated function. The score, the survivors (file:line and the diff) and the
timeouts are printed and written as markdown to `--report` (default `var/mutate/report.md`).

Tests on PostgreSQL use one throwaway server for the whole run (or the one
`GATEWAY_TEST_POSTGRES_URL` names), not one per mutant: starting a server costs seconds, and a
module's run tests hundreds of mutants.

Mutants that only change the case of SQL text are judged equivalent by rule and not run (see
`sql_case_change`): they made up much of the hand-judged survivors of both ledgers, and each one
runs every test that reaches its function. The report counts and lists them apart.

Limits, from mutmut 3's design: only code inside functions and methods is mutated (not module
constants or class bodies), and a mutant only exists in the test process, so a test that drives a
gateway in a subprocess cannot kill it. A timeout counts as caught, as in mutmut's own score.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "mutate" / "work"
DEFAULT_REPORT = ROOT / "var" / "mutate" / "report.md"
PKG = "src/manager_gateway"

# Core module -> the tests run against its mutants. Kept small: what exercises the module
# through its own API plus the one or two end-to-end files that guard its failure paths.
# A test file, or one test in it (pytest's `file::test`); tests/test_mutate_tool.py checks that
# every one exists.
TESTS: dict[str, tuple[str, ...]] = {
    f"{PKG}/waiters.py": (
        "tests/unit/test_waiters.py",
        "tests/unit/test_waiter_simulation.py",
        "tests/e2e/test_sync_timeout.py",
    ),
    f"{PKG}/server/connection.py": (
        "tests/unit/test_connection.py",
        "tests/unit/test_connection_outcomes.py",
        "tests/unit/test_admission.py",
        "tests/e2e/test_transport.py",
        "tests/e2e/test_limits.py",
        "tests/e2e/test_read_your_writes.py",
    ),
    f"{PKG}/server/app.py": (
        "tests/unit/test_connection.py",
        "tests/unit/test_connection_outcomes.py",
        "tests/unit/test_admission.py",
        "tests/e2e/test_gateway_lifecycle.py",
        "tests/e2e/test_shutdown.py",
        "tests/e2e/test_sessions.py",
        "tests/e2e/test_transport.py",
        "tests/e2e/test_settlement_retention.py",
        "tests/e2e/test_history_window.py",
    ),
    f"{PKG}/commands/dispatch.py": (
        "tests/unit/test_permissions.py",
        "tests/e2e/test_commands.py",
        "tests/e2e/test_sessions.py",
        "tests/e2e/test_internal_errors.py",
        "tests/e2e/test_submission_order.py",
        "tests/e2e/test_documented_answers.py",
        "tests/e2e/test_rejection_messages.py::test_an_unknown_command_and_a_missing_token_say_so",
    ),
    f"{PKG}/runtime/mainloop.py": (
        "tests/unit/test_connection.py",
        "tests/e2e/test_internal_errors.py",
        "tests/e2e/test_sync_timeout.py",
        "tests/e2e/test_shutdown.py",
        "tests/e2e/test_ledger_failures.py",
        "tests/e2e/test_idempotency.py",
        "tests/e2e/test_history_window.py",
        "tests/e2e/test_key_expiry.py",
        "tests/e2e/test_commands.py",
        "tests/e2e/test_settlement_retention.py",
        "tests/e2e/test_batches.py",
        "tests/e2e/test_nodes.py",  # the shared ledger's paths: versions, events, look-ups
        "tests/e2e/test_postgres_ledger.py",  # and the numbers a shared batch draws
        # Single tests where a whole file would take minutes per mutant: the batch metrics, and
        # settlement operations, which bypass the key bookkeeping (their failed commit, events).
        "tests/e2e/test_metrics.py::test_traffic_moves_the_counts_exactly",
        "tests/e2e/test_metrics.py::test_failed_commit_is_counted",
        "tests/e2e/test_settlement.py::test_a_failed_commit_moves_nothing",
        "tests/e2e/test_settlement.py::test_adjustments_reach_tcp_sessions_as_events",
    ),
    f"{PKG}/runtime/journal.py": (
        "tests/unit/test_settlement_rules.py",
        "tests/e2e/test_idempotency.py",
        "tests/e2e/test_ledger_failures.py",
        "tests/e2e/test_settlement.py",
    ),
    f"{PKG}/runtime/operations.py": (
        "tests/unit/test_settlement_rules.py",
        "tests/e2e/test_commands.py",
        "tests/e2e/test_leaks.py",
        "tests/e2e/test_rejection_messages.py",
        "tests/e2e/test_ledger_verify.py",
    ),
    f"{PKG}/runtime/records.py": (
        "tests/unit/test_settlement_rules.py",
        "tests/e2e/test_commands.py",
        "tests/e2e/test_ledger_failures.py",
        "tests/e2e/test_ledger_verify.py",
        "tests/e2e/test_idempotency.py",
    ),
    f"{PKG}/ledger/sqlite.py": (
        "tests/e2e/test_ledger_failures.py",
        "tests/e2e/test_ledger_verify.py",
        "tests/e2e/test_ledger_lock.py",
        "tests/e2e/test_key_expiry.py",
        "tests/e2e/test_disk_full.py",
        "tests/e2e/test_idempotency.py",
        "tests/e2e/test_shutdown.py",
        "tests/e2e/test_restart_state.py",
        "tests/e2e/test_history_window.py",
        "tests/e2e/test_commands.py",
        "tests/e2e/test_settlement_retention.py",
        "tests/e2e/test_settlement_report.py",
        "tests/unit/test_ledger_reads.py",
        "tests/unit/test_ledger_queries.py",
    ),
    f"{PKG}/runtime/peers.py": (
        "tests/unit/test_peers.py",
        "tests/e2e/test_nodes.py",
        "tests/e2e/test_node_failover.py",
    ),
    f"{PKG}/ledger/threaded.py": (
        "tests/e2e/test_ledger_failures.py",
        "tests/e2e/test_shutdown.py",
        "tests/e2e/test_settlement_retention.py",
        "tests/e2e/test_history_window.py",
    ),
    f"{PKG}/ledger/migrate.py": (
        "tests/e2e/test_migrations.py",
        "tests/unit/test_ledger_reads.py",
    ),
    f"{PKG}/ledger/rows.py": (
        "tests/e2e/test_restart_state.py",
        "tests/e2e/test_migrations.py",
        "tests/e2e/test_nodes.py",
        "tests/e2e/test_history_window.py",
        "tests/e2e/test_settlement_ledger.py",
    ),
    # PostgreSQL: each test starts gateways on a database of its own. test_node_failover.py is
    # left out: its nodes are processes, which never see a mutant.
    f"{PKG}/ledger/postgres.py": (
        "tests/e2e/test_postgres_ledger.py",
        "tests/e2e/test_nodes.py",
        "tests/e2e/test_migrations.py",
        "tests/e2e/test_key_expiry.py",
        "tests/e2e/test_settlement_retention.py",
        "tests/e2e/test_idempotency.py",
        "tests/e2e/test_settlement.py",
        "tests/e2e/test_commands.py",
    ),
    f"{PKG}/runtime/state.py": (
        "tests/unit/test_settlement_rules.py",
        "tests/e2e/test_commands.py",
        "tests/e2e/test_restart_state.py",
        "tests/e2e/test_history_window.py",
        "tests/e2e/test_idempotency.py",
        "tests/e2e/test_key_expiry.py",
        "tests/e2e/test_settlement_retention.py",
        "tests/e2e/test_sync_timeout.py",
    ),
    f"{PKG}/runtime/storage.py": (
        "tests/unit/test_connection.py",
        "tests/e2e/test_ledger_failures.py",
    ),
    f"{PKG}/ledger/verify.py": (
        "tests/e2e/test_ledger_verify.py",
        "tests/e2e/test_settlement_ledger.py",
        "tests/e2e/test_restart_state.py",
        "tests/test_cli.py",
    ),
    f"{PKG}/protocol/codec.py": (
        "tests/unit/test_codec.py",
        "tests/unit/test_envelope_messages.py",
        "tests/unit/test_ascii_frames.py",
        "tests/unit/test_permissions.py",
    ),
    f"{PKG}/protocol/errors.py": (
        "tests/unit/test_codec.py",
        "tests/unit/test_envelope_messages.py",
        "tests/unit/test_framing.py",
        "tests/unit/test_waiters.py",
        "tests/unit/test_models.py",
    ),
    f"{PKG}/protocol/framing.py": ("tests/unit/test_framing.py",),
    f"{PKG}/protocol/models.py": (
        "tests/unit/test_models.py",
        "tests/unit/test_data_messages.py",
    ),
    f"{PKG}/protocol/money.py": (
        "tests/unit/test_money.py",
        "tests/unit/test_data_messages.py",
        "tests/unit/test_ascii_frames.py",
    ),
    f"{PKG}/session/access.py": (
        "tests/unit/test_access.py",
        "tests/unit/test_permissions.py",
        "tests/e2e/test_sessions.py",
    ),
    f"{PKG}/session/passwords.py": (
        "tests/unit/test_passwords.py",
        "tests/e2e/test_commands.py",
    ),
    f"{PKG}/session/permissions.py": (
        "tests/unit/test_permissions.py",
        "tests/e2e/test_sessions.py",
    ),
    f"{PKG}/session/session.py": (
        "tests/unit/test_access.py",
        "tests/unit/test_permissions.py",
        "tests/e2e/test_sessions.py",
        "tests/e2e/test_events.py",
        "tests/unit/test_connection.py",
        "tests/e2e/test_documented_answers.py",
        "tests/e2e/test_rejection_messages.py::test_an_unknown_command_and_a_missing_token_say_so",
    ),
    f"{PKG}/session/tokens.py": (
        "tests/unit/test_tokens.py",
        "tests/unit/test_token_messages.py",
        "tests/unit/test_access.py",
    ),
    f"{PKG}/settlement/codes.py": (
        "tests/unit/test_settlement_models.py",
        "tests/unit/test_settlement_service.py",
        "tests/unit/test_settlement_decisions.py",
    ),
    f"{PKG}/settlement/http.py": (
        "tests/unit/test_settlement_http.py",
        "tests/e2e/test_settlement_http.py",
        "tests/e2e/test_settlement.py",
    ),
    f"{PKG}/settlement/models.py": (
        "tests/unit/test_settlement_models.py",
        "tests/unit/test_settlement_amounts.py",
        "tests/unit/test_settlement_service.py",
    ),
    f"{PKG}/settlement/report.py": (
        "tests/e2e/test_settlement_report.py",
        "tests/e2e/test_settlement_ledger.py",
    ),
    f"{PKG}/settlement/rules.py": (
        "tests/unit/test_settlement_rules.py",
        "tests/unit/test_settlement_decisions.py",
    ),
    f"{PKG}/settlement/service.py": (
        "tests/unit/test_settlement_models.py",
        "tests/unit/test_settlement_service.py",
        "tests/e2e/test_settlement_http.py",
        "tests/e2e/test_settlement.py",
    ),
}

# mutmut's exit-code statuses that mean the tests noticed the mutant.
CAUGHT = {"killed", "timeout", "caught by type check"}

MUTANT_NAME = re.compile(
    r"^(?P<module>[\w.]+?)\.x(?:ǁ(?P<cls>\w+)ǁ(?P<method>\w+)|_(?P<func>\w+))__mutmut_(?P<n>\d+)$"
)
HUNK = re.compile(r"^@@ -(?P<start>\d+)")

# The status of a mutant judged equivalent by rule instead of run.
SQL_CASE = "equivalent: SQL case"
# SQL text as the code writes it: an upper-case keyword as a whole word.
SQL_KEYWORD = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|JOIN|ORDER BY|GROUP BY|VALUES|RETURNING|WITH"
    r"|AND|OR|ON|AS|SET|LIMIT|OFFSET|DISTINCT|CREATE|ALTER|DROP|BEGIN|COMMIT|ROLLBACK|PRAGMA"
    r"|LISTEN|NOTIFY)\b"
)
# What makes a case change matter even in SQL: a quoted literal or identifier, a format field.
CASE_SENSITIVE = re.compile(r"['\"`{}%]|\$\$")


@dataclass
class Mutant:
    name: str
    status: str
    function: str = ""
    line: int = 0
    diff: str = ""


@dataclass
class ModuleResult:
    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # only these functions' mutants, when given
    seconds: float = 0.0
    error: str = ""
    mutants: list[Mutant] = field(default_factory=list)

    def count(self, *statuses: str) -> int:
        return sum(1 for m in self.mutants if m.status in statuses)

    @property
    def uncaught(self) -> list[Mutant]:
        return [m for m in self.mutants if m.status not in CAUGHT | {SQL_CASE}]

    @property
    def scored(self) -> int:
        """The mutants the score counts: all but those judged equivalent by rule."""
        return len(self.mutants) - self.count(SQL_CASE)

    def score_line(self) -> str:
        if self.error:
            return f"{self.path}: not scored ({self.error})"
        if not self.mutants:
            return f"{self.path}: nothing mutmut mutates (it changes function bodies only)"
        scope = f" ({', '.join(self.functions)} only)" if self.functions else ""
        killed = self.count("killed", "caught by type check")
        timeouts = self.count("timeout")
        caught = killed + timeouts
        pct = 100.0 * caught / self.scored if self.scored else 100.0
        others = self.count("no tests")
        extra = f", {others} reached by no test" if others else ""
        judged = self.count(SQL_CASE)
        extra += f", {judged} only change SQL's case (not run)" if judged else ""
        survived = len(self.uncaught) - others
        return (
            f"{self.path}{scope}: {killed}/{self.scored} killed, {timeouts} timeouts, "
            f"{survived} survived{extra}; {pct:.1f} % caught, in {self.seconds:.0f} s"
        )


def select(names: list[str]) -> list[str]:
    """The TESTS keys named: a module path, a package directory, or every one when none."""
    if not names:
        return list(TESTS)
    chosen: list[str] = []
    for name in names:
        wanted = name.rstrip("/")
        matches = [m for m in TESTS if m == wanted or m.startswith(wanted + "/")]
        if not matches:
            raise SystemExit(f"tools/mutate: no core module {name!r} (see tools/mutate --list)")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def split_name(function: str) -> tuple[str | None, str]:
    """`Class.method` -> ("Class", "method"); `function` -> (None, "function")."""
    cls, _, name = function.rpartition(".")
    return (cls or None), name


def dotted_name(module: str) -> str:
    """`src/manager_gateway/waiters.py` -> `manager_gateway.waiters`, as mutmut names mutants."""
    return module.removeprefix("src/").removesuffix(".py").replace("/", ".")


def function_patterns(module: str, functions: list[str]) -> list[str]:
    """mutmut's name patterns for the mutants of `functions` (`name` or `Class.name`) in
    `module`; refuses a name the module does not define."""
    source = (ROOT / module).read_text()
    unknown = [f for f in functions if function_node(source, *split_name(f)) is None]
    if unknown:
        raise SystemExit(f"tools/mutate: {module} defines no function {', '.join(unknown)}")
    dotted = dotted_name(module)
    patterns = []
    for function in functions:
        cls, name = split_name(function)
        patterns.append(
            f"{dotted}.xǁ{cls}ǁ{name}__mutmut_*" if cls else f"{dotted}.x_{name}__mutmut_*"
        )
    return patterns


@contextmanager
def postgres_for_tests() -> Iterator[None]:
    """One PostgreSQL server for every mutant's tests: the configured one, else a throwaway one
    (tests/postgres.py starts it, as the suite does) exported to the test runs."""
    sys.path.insert(0, str(ROOT))  # this script runs from tools/; the tests' helper is a package
    from tests.postgres import ENV, postgres_server

    if os.environ.get(ENV):
        yield
        return
    with postgres_server() as server:
        os.environ[ENV] = server.url
        try:
            yield
        finally:
            del os.environ[ENV]


def working_tree_files() -> list[str]:
    """Tracked files and untracked ones git does not ignore, as the scratch copies hold them."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def commit() -> str:
    """HEAD's short hash, marked when src/ or tests/ differ from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head} (with uncommitted changes in src/ or tests/)" if dirty else head


def mutmut_config(module: str, tests: tuple[str, ...], also_copy: list[str]) -> str:
    """The [tool.mutmut] table for one module's scratch copy."""

    def toml_list(items: list[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    return (
        "\n\n[tool.mutmut]\n"
        'source_paths = ["src/"]\n'
        f"only_mutate = {toml_list([module])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        f"also_copy = {toml_list(also_copy)}\n"
        # The scratch copy lies inside this repository: keep mutmut's git probing out of it.
        "use_git_change_detection = false\n"
    )


def prepare(module: str, files: list[str], tests: tuple[str, ...]) -> Path:
    """A fresh scratch copy of the working tree for one module, configured for mutmut."""
    work = WORK / module.removeprefix("src/").replace("/", "-").removesuffix(".py")
    if work.exists():
        shutil.rmtree(work)
    for rel in files:
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    top = sorted({rel.split("/", 1)[0] for rel in files} - {"src"})
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text()
    text = re.split(r"^\[tool\.mutmut\]", text, flags=re.M)[0]  # ours replaces any there
    pyproject.write_text(text + mutmut_config(module, tests, top))
    return work


def mutmut(work: Path, *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if log is None:
        return subprocess.run(
            [sys.executable, "-m", "mutmut", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
    with log.open("w") as out:
        return subprocess.run(
            [sys.executable, "-m", "mutmut", *args],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def function_node(source: str, cls: str | None, name: str) -> ast.AST | None:
    tree = ast.parse(source)
    body: list[ast.stmt] = tree.body
    if cls is not None:
        owner = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == cls), None)
        if owner is None:
            return None
        body = owner.body
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    return next((n for n in body if isinstance(n, funcs) and n.name == name), None)


def differences(a: object, b: object) -> list[tuple[object, object]] | None:
    """The leaf values in which two syntax trees differ, or None when their shapes differ.
    A function's own name is not compared: mutmut names each copy apart."""
    if type(a) is not type(b):
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return None
        pairs = [differences(x, y) for x, y in zip(a, b, strict=True)]
    elif isinstance(a, ast.AST):
        skip = {"name"} if isinstance(a, ast.FunctionDef | ast.AsyncFunctionDef) else set()
        pairs = [differences(getattr(a, f), getattr(b, f)) for f in a._fields if f not in skip]
    else:
        return [] if a == b else [(a, b)]
    if any(p is None for p in pairs):
        return None
    return [d for p in pairs if p is not None for d in p]


def sql_case_change(original: ast.AST, mutant: ast.AST) -> str | None:
    """The SQL text whose case alone the mutant changes, or None.

    The rule: the two functions differ in one string constant only, in case only, and that
    string holds an upper-case SQL keyword and no quote, backtick, brace, percent sign or `$$`.
    Such a change is invisible: SQLite and PostgreSQL read keywords and unquoted identifiers
    in any case (PostgreSQL folds them to lower case), and the ledgers read rows by position.
    A quoted name or literal, a format field or a Python-side key is case-sensitive, so a
    mutant of one is run like any other."""
    changed = differences(original, mutant)
    if not changed or len(changed) != 1:
        return None
    old, new = changed[0]
    if not (isinstance(old, str) and isinstance(new, str)) or old.lower() != new.lower():
        return None
    if SQL_KEYWORD.search(old) is None or CASE_SENSITIVE.search(old):
        return None
    return old


def generated_mutants(module: str) -> dict[str, str | None]:
    """Every mutant mutmut makes of `module`, by full name, with the SQL text it only changes
    the case of (None for the others). mutmut's own generator, run here: the same names and
    code `mutmut run` makes."""
    from mutmut.mutation.file_mutation import mutate_file_contents

    mutated = mutate_file_contents(module, (ROOT / module).read_text())
    functions: dict[str, ast.AST] = {}
    pending = list(ast.parse(mutated.code).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.ClassDef):
            pending += node.body
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions[node.name] = node
    dotted = dotted_name(module)
    found: dict[str, str | None] = {}
    for name in mutated.mutant_names:
        original = functions[name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"]
        found[f"{dotted}.{name}"] = sql_case_change(original, functions[name])
    return found


def locate(mutant: Mutant, source: str) -> None:
    """Set the mutant's function and file line from its name and its function-relative diff."""
    match = MUTANT_NAME.match(mutant.name)
    if match is None:
        return
    cls, name = match["cls"], match["method"] or match["func"]
    mutant.function = f"{cls}.{name}" if cls else name
    node = function_node(source, cls, name)
    if node is None or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = source.splitlines()
    old_line, removed = 0, ""
    for text in mutant.diff.splitlines():
        hunk = HUNK.match(text)
        if hunk:
            old_line = int(hunk["start"])
        elif text.startswith("-") and not text.startswith("---"):
            removed = text[1:].strip()
            break
        elif text.startswith(" "):
            old_line += 1
    guess = node.lineno + old_line - 1 if old_line else node.lineno
    end = node.end_lineno or len(lines)
    if removed and not (0 < guess <= len(lines) and lines[guess - 1].strip() == removed):
        found = [i for i in range(first, end + 1) if lines[i - 1].strip() == removed]
        if found:
            guess = min(found, key=lambda i: abs(i - guess))
    mutant.line = guess


def run_module(
    module: str, files: list[str], jobs: int, functions: list[str], tests: tuple[str, ...]
) -> ModuleResult:
    """Mutation-test `module` against `tests`: every mutant, or only those of `functions`."""
    result = ModuleResult(module, tests, tuple(functions))
    patterns = function_patterns(module, functions)
    generated = {
        name: sql
        for name, sql in generated_mutants(module).items()
        if not patterns or any(fnmatch(name, p) for p in patterns)
    }
    by_rule = {name: sql for name, sql in generated.items() if sql is not None}
    # With mutants judged by rule, mutmut is told the others by name; else by function pattern.
    to_run = [name for name in generated if name not in by_rule] if by_rule else patterns
    print(f"== {module}: mutmut with {' '.join(result.tests)}", flush=True)
    if not generated:
        return result  # no function body mutmut can change (a NamedTuple's fields): 0 mutants
    work = prepare(module, files, tests)
    log = work / "mutmut.log"
    if by_rule:
        print(f"   {len(by_rule)} mutants only change the case of SQL text: equivalent by rule")
    if by_rule and not to_run:
        result.mutants = [Mutant(name, SQL_CASE) for name in by_rule]
        return result
    start = time.monotonic()
    run = mutmut(work, "run", "--max-children", str(jobs), *to_run, log=log)
    result.seconds = time.monotonic() - start
    if run.returncode != 0:
        result.error = f"mutmut run exited {run.returncode}; see {log.relative_to(ROOT)}"
        return result
    listing = mutmut(work, "results", "--all", "true")
    source = (ROOT / module).read_text()
    for row in listing.stdout.splitlines():
        name, _, status = row.strip().rpartition(": ")
        if not name or name not in generated:
            continue
        mutant = Mutant(name, SQL_CASE if name in by_rule else status)
        if mutant.status not in CAUGHT:
            shown = mutmut(work, "show", name).stdout
            mutant.diff = "\n".join(shown.splitlines()[1:]).strip()  # drop mutmut's title line
            locate(mutant, source)
        result.mutants.append(mutant)
    return result


def survivor_heading(module: str, mutant: Mutant) -> str:
    number = mutant.name.rsplit("__mutmut_", 1)[-1]
    return f"{module}:{mutant.line} `{mutant.function}` mutant {number}: {mutant.status}"


def changed_line(mutant: Mutant) -> str:
    """The mutant's version of the line it changes (its diff's first added line)."""
    added = [t[1:].strip() for t in mutant.diff.splitlines() if t.startswith("+")]
    return next((t for t in added if not t.startswith("++")), "")


def report(results: list[ModuleResult], head: str, started: datetime, seconds: float) -> str:
    out = [
        "# Mutation testing report",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC, commit {head}, mutmut, {seconds / 60:.1f} minutes.",
        "",
        "SQL case: mutants that only change the case of SQL text, equivalent by rule (not run,",
        "not scored; `sql_case_change` in tools/mutate.py).",
        "",
        "| module | mutants | SQL case | killed | timeouts | survived | no tests | caught | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            out.append(f"| `{r.path}` | {r.error} | | | | | | | |")
            continue
        caught = r.scored - len(r.uncaught)
        pct = 100.0 * caught / r.scored if r.scored else 100.0
        out.append(
            f"| `{r.path}` | {len(r.mutants)} | {r.count(SQL_CASE)} "
            f"| {r.count('killed', 'caught by type check')} "
            f"| {r.count('timeout')} | {len(r.uncaught) - r.count('no tests')} "
            f"| {r.count('no tests')} | {pct:.1f} % | {r.seconds:.0f} s |"
        )
    for r in results:
        given = " (given with --tests, not the table's)" if r.tests != TESTS[r.path] else ""
        tests = ", ".join(f"`{t}`" for t in r.tests)
        out += ["", f"## `{r.path}`", "", f"Tests{given}: {tests}", ""]
        if r.functions:
            out += ["Only the mutants of: " + ", ".join(f"`{f}`" for f in r.functions), ""]
        judged = [m for m in r.mutants if m.status == SQL_CASE]
        if judged:
            out += ["Equivalent by rule, SQL text in another case (not run):", ""]
            out += [f"- {survivor_heading(r.path, m)}: `{changed_line(m)}`" for m in judged]
            out.append("")
        if not r.uncaught:
            out.append("No survivors." if not r.error else r.error)
            continue
        for m in r.uncaught:
            out += [f"### {survivor_heading(r.path, m)}", "", "```diff", m.diff, "```", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/mutate",
        description="Mutation testing of the core modules with mutmut; each against its tests.",
    )
    parser.add_argument("modules", nargs="*", metavar="MODULE", help="module path or package dir")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="markdown report")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 4, help="mutants at once")
    parser.add_argument("--list", action="store_true", help="print the module -> tests table")
    parser.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME",
        help="only this function's or method's (Class.name) mutants; one module; repeatable",
    )
    parser.add_argument(
        "--tests",
        action="append",
        default=[],
        metavar="PATH",
        help="run these tests (file or file::test) instead of the table's; one module; repeatable",
    )
    args = parser.parse_args(argv)
    modules = select(args.modules)
    for option in ("function", "tests"):
        if getattr(args, option) and len(modules) != 1:
            raise SystemExit(f"tools/mutate: --{option} needs exactly one module")
    missing = [t for t in args.tests if not (ROOT / t.partition("::")[0]).is_file()]
    if missing:
        raise SystemExit(f"tools/mutate: no test file {', '.join(missing)}")
    function_patterns(modules[0], args.function)  # an unknown name is refused before any work
    if args.list:
        for module in modules:
            print(f"{module}: {' '.join(TESTS[module])}")
        return 0

    started = datetime.now(UTC)
    head = commit()
    files = working_tree_files()
    clock = time.monotonic()
    results = []
    with postgres_for_tests():
        for module in modules:
            tests = tuple(args.tests) or TESTS[module]
            result = run_module(module, files, args.jobs, args.function, tests)
            results.append(result)
            print(result.score_line(), flush=True)
            for m in result.uncaught:
                print(f"  {survivor_heading(module, m)}")
                print("    " + "\n    ".join(m.diff.splitlines()))
    elapsed = time.monotonic() - clock

    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report(results, head, started, elapsed))
    print(f"\nscores (report in {args.report}):")
    for r in results:
        print("  " + r.score_line())
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
