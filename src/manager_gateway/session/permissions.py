"""Which session types may run which commands (docs/protocol.md section 3), as data.

Group masks and "own login only" are checked against the account a command touches; this table is
only the first gate, applied once by the dispatcher.
"""

from __future__ import annotations

from .access import SessionType

STAFF = frozenset({SessionType.MANAGER, SessionType.DEALER, SessionType.ADMIN})
ACCOUNT_CREATORS = frozenset({SessionType.MANAGER, SessionType.ADMIN})
EVERYONE = frozenset({SessionType.USER, *STAFF})
