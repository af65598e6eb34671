"""The conformance kit's options and what it reports: a verdict per case, the cases whose
money cannot be taken back, and the wallet before and after."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .platform import PLATFORM_TIMEOUT_S

DEFAULT_UNKNOWN_LOGIN = 999_999_999


@dataclass(frozen=True)
class KitOptions:
    url: str
    login: int
    currency: str
    company_id: int = 1
    unknown_login: int = DEFAULT_UNKNOWN_LOGIN
    token: str | None = None
    user_name: str | None = None  # the platform's user id; default kit-<login>
    timeout_s: float = PLATFORM_TIMEOUT_S
    stale_s: float = 3600.0  # well past the default 300 s skew allowance, either way
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    reason: str
    before: Decimal | None = None
    after: Decimal | None = None
    irreversible: bool = False

    @property
    def net(self) -> Decimal | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<36} {self.reason}"


@dataclass
class KitReport:
    options: KitOptions
    results: list[CaseResult] = field(default_factory=list)
    start: Decimal | None = None
    end: Decimal | None = None
    setup_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.setup_error is None and all(r.passed for r in self.results)

    @property
    def failed_cases(self) -> list[str]:
        return [r.name for r in self.results if not r.passed]

    @property
    def irreversible(self) -> list[tuple[str, Decimal | None]]:
        """The cases whose money the kit cannot take back, with what each moved."""
        return [(r.name, r.net) for r in self.results if r.irreversible]

    def closing_lines(self) -> list[str]:
        if self.setup_error is not None:
            return [f"cannot run: {self.setup_error}"]
        moved = ", ".join(f"{name} {_signed(net)}" for name, net in self.irreversible)
        lines = [f"not undone (by design): {moved or 'none'}"]
        if self.start is not None and self.end is not None:
            lines.append(
                f"wallet {self.options.login}: started {self.start}, ends {self.end} "
                f"({_signed(self.end - self.start)}) {self.options.currency}"
            )
        failed = self.failed_cases
        lines.append(
            f"{len(self.results)} cases: {len(self.results) - len(failed)} passed, "
            f"{len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")
        )
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "setup_error": self.setup_error,
            "url": self.options.url,
            "login": self.options.login,
            "currency": self.options.currency,
            "start": _text(self.start),
            "end": _text(self.end),
            "cases": [
                {
                    "name": r.name,
                    "passed": r.passed,
                    "reason": r.reason,
                    "before": _text(r.before),
                    "after": _text(r.after),
                    "irreversible": r.irreversible,
                }
                for r in self.results
            ],
            "irreversible": {name: _text(net) for name, net in self.irreversible},
        }


def _signed(amount: Decimal | None) -> str:
    return "unknown" if amount is None else (f"{amount:+f}" if amount else "0")


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)
