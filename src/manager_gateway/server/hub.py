"""Event fan-out: committed changes go to every session allowed to see them.

Each event is encoded once; the same bytes are queued on every recipient's connection. Only
connections that can hear events at all (authenticated, at least one event channel on) are walked,
so a thousand load-test connections with their channels off cost the fan-out nothing, and an event
nobody can hear is never encoded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from ..clock import Clock
from ..protocol.codec import encode_event
from ..runtime.records import Account
from ..session.session import BALANCE_EVENT, TRADE_EVENT
from .metrics import Metrics

if TYPE_CHECKING:
    from .connection import Connection


class EventHub:
    """Implements the main loop's `EventSink` over the set of live connections."""

    def __init__(self, clock: Clock, metrics: Metrics) -> None:
        self._clock = clock
        self._pushed = metrics.events_pushed
        self.connections: set[Connection] = set()
        self.listeners: set[Connection] = set()  # the connections `_fan_out` walks

    def set_listening(self, connection: Connection, listening: bool) -> None:
        if listening:
            self.listeners.add(connection)
        else:
            self.listeners.discard(connection)

    def trade_event(self, event_type: int, account: Account, data_json: bytes) -> None:
        if self.listeners:
            frame = encode_event(TRADE_EVENT, event_type, data_json)
            self._fan_out(TRADE_EVENT, account.login, account.group, frame)

    def balance_event(self, account: Account) -> None:
        if self.listeners:
            frame = encode_event(BALANCE_EVENT, 1, orjson.dumps(account.balance_wire()))
            self._fan_out(BALANCE_EVENT, account.login, account.group, frame)

    def _fan_out(self, channel: str, login: int, group: str, frame: bytes) -> None:
        now = self._clock.wall()
        queued = 0
        for connection in self.listeners:
            session = connection.session
            access = session.access
            if (
                access is not None
                and session.hears(channel, now)
                and access.sees_account(login, group)
            ):
                connection.send(frame)
                queued += 1
        self._pushed[channel] += queued
