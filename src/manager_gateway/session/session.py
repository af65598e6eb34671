"""One connection's session: the bound token, its access, and which channels it listens to."""

from __future__ import annotations

import asyncio

from ..protocol.errors import InvalidToken
from .access import Access, SessionType
from .tokens import TokenService

TRADE_EVENT = "trade:event"
BALANCE_EVENT = "balance:event"
EVENT_CHANNELS = frozenset({TRADE_EVENT, BALANCE_EVENT})


class Session:
    """Authentication state and subscriptions of one connection (docs/protocol.md, 3 and 5)."""

    __slots__ = (
        "access",
        "auth_failures",
        "closed",
        "event_channels",
        "submit_tail",
        "subscribe_all",
        "symbols",
        "token",
        "type_counts",
    )

    def __init__(self, type_counts: list[int] | None = None) -> None:
        self.token: str | None = None
        self.access: Access | None = None
        self.auth_failures = 0
        self.closed = False  # the connection is gone; nothing more can be sent to it
        # Both event channels are on by default, so the official clients get events unasked.
        self.event_channels: set[str] = set(EVENT_CHANNELS)
        self.symbols: set[str] = set()
        self.subscribe_all = False
        # The last state-changing request's "has reached the main loop" future (commands.context).
        self.submit_tail: asyncio.Future[None] | None = None
        # Open sessions by the type of their bound token (the server's metrics), indexed by
        # SessionType; plain ints, so a metrics thread may read them.
        self.type_counts = type_counts if type_counts is not None else [0] * len(SessionType)

    @property
    def ever_authenticated(self) -> bool:
        return self.access is not None

    def authenticate(self, presented: object, tokens: TokenService, now: float) -> Access:
        """The access for a request: its own token if it has one, else the bound one.

        A presented token that is invalid is refused even when a valid one is bound (no fallback);
        a valid one becomes the bound token. Verification is cached on the token string; expiry is
        checked on every use.
        """
        try:
            if presented is None or (presented == self.token and self.access is not None):
                access = self.access
                if access is None:
                    raise InvalidToken("missing token")
                if access.expires_at <= now:
                    raise InvalidToken("token expired")
            else:
                access = self._bind(presented, tokens, now)
        except InvalidToken:
            self.auth_failures += 1
            raise
        self.auth_failures = 0
        return access

    def offer(self, presented: object, tokens: TokenService, now: float) -> None:
        """A token sent where none is needed (HealthCheck): when valid it is accepted like any
        request's (bound, and the failure count reset); an invalid one is ignored, so a probe
        never breaks, never unbinds the session and never counts towards `max_auth_failures`."""
        if presented is None:
            return
        access = self.access
        bound = presented == self.token and access is not None and access.expires_at > now
        if not bound:
            try:
                self._bind(presented, tokens, now)
            except InvalidToken:
                return
        self.auth_failures = 0

    def _bind(self, presented: object, tokens: TokenService, now: float) -> Access:
        """Verify `presented` and make it the bound token; raises `InvalidToken`."""
        access = tokens.verify(presented, now)
        self._count(access)
        self.token, self.access = str(presented), access  # verify() took only a str
        return access

    def close(self) -> None:
        """The connection is gone: nothing more can be sent to this session."""
        if not self.closed:
            self._count(None)
            self.closed = True

    def _count(self, access: Access | None) -> None:
        """Move this session's count from its bound token's type to `access`'s."""
        if self.closed:
            return
        if self.access is not None:
            self.type_counts[self.access.type] -= 1
        if access is not None:
            self.type_counts[access.type] += 1

    def hears(self, channel: str, now: float) -> bool:
        """Does this session receive pushed `channel` events right now?"""
        access = self.access
        return access is not None and channel in self.event_channels and access.expires_at > now
