"""Session types and the access object a valid token grants (docs/protocol.md section 3)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum


class SessionType(IntEnum):
    """ScaleTrade SDK numbering; SYSTEM and FIX exist but are refused on this API."""

    USER = 0
    MANAGER = 1
    DEALER = 2
    ADMIN = 3
    SYSTEM = 4
    FIX = 5


def compile_masks(masks: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for a list of group masks where `*` matches any run of characters."""
    parts = [".*".join(re.escape(piece) for piece in mask.split("*")) for mask in masks]
    parts = [f"(?:{part})" for part in parts]
    return re.compile("|".join(parts) if parts else "(?!)")


@dataclass(slots=True, eq=False)
class Access:
    """What one session may see and do; built by the server from verified token claims only."""

    subject: str
    type: SessionType
    groups: tuple[str, ...]
    expires_at: float
    _pattern: re.Pattern[str] = field(init=False, repr=False)
    _seen: dict[str, bool] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._pattern = compile_masks(self.groups)

    @property
    def own_login(self) -> int | None:
        """A USER session's own account; None for staff or a non-numeric subject."""
        return int(self.subject) if self.subject.isdigit() else None

    def sees_group(self, group: str) -> bool:
        """Group-mask check for MANAGER and DEALER; ADMIN sees every group, USER none by group."""
        if self.type is SessionType.ADMIN:
            return True
        if self.type not in (SessionType.MANAGER, SessionType.DEALER):
            return False  # USER goes by its own login; SYSTEM and FIX are refused on this API
        seen = self._seen.get(group)
        if seen is None:
            seen = self._seen[group] = self._pattern.fullmatch(group) is not None
        return seen

    def sees_account(self, login: int, group: str) -> bool:
        """May this session see (and, role permitting, touch) this account?"""
        if self.type is SessionType.USER:
            return login == self.own_login
        return self.sees_group(group)
