"""Slowing down token guessing: an address whose connection was closed for repeated invalid
tokens may not open a new one for a while, and the while doubles with every new offence.

`max_auth_failures` closes one connection; without this, a client could reconnect at once and
keep guessing at full speed. Connections already open from the address are untouched (a CRM
behind the same NAT address keeps its sessions); only new ones are refused during the penalty.
The table is bounded: the least recently penalised addresses are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict

from ..clock import Clock

#: Addresses remembered at most; beyond it the oldest offender is forgotten (memory bound).
MAX_TRACKED_ADDRESSES = 10_000
#: Offences counted at most: the penalty has long reached its maximum by then.
MAX_DOUBLINGS = 64


class AuthThrottle:
    def __init__(
        self, clock: Clock, base_s: float, max_s: float, capacity: int = MAX_TRACKED_ADDRESSES
    ) -> None:
        self._clock = clock
        self._base_s = base_s
        self._max_s = max_s
        self._capacity = capacity
        # address -> (offences, refused until, on the monotonic clock)
        self._penalties: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def penalize(self, address: str) -> float:
        """A connection from `address` was closed for invalid tokens: the penalty in seconds."""
        now = self._clock.monotonic()
        offences, until = self._penalties.pop(address, (0, now))
        if now > until + self._max_s:
            offences = 0  # quiet for a whole maximum penalty: start again from the base
        offences = min(offences + 1, MAX_DOUBLINGS)  # 2.0 ** 1024 would overflow a float
        penalty = min(self._base_s * 2.0 ** (offences - 1), self._max_s)
        self._penalties[address] = (offences, now + penalty)
        while len(self._penalties) > self._capacity:
            self._penalties.popitem(last=False)
        return penalty

    def refuses(self, address: str) -> bool:
        """Is a new connection from `address` refused right now?"""
        entry = self._penalties.get(address)
        return entry is not None and self._clock.monotonic() < entry[1]

    def __len__(self) -> int:
        return len(self._penalties)
