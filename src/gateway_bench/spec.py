"""What a load run does (`LoadSpec`), the commands it can send, and how their data is built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .checks import FINANCE_CMD, SYNC_FINANCE_CMD

# Commands the generator knows how to fill with data (and how to check the answers of).
LOAD_COMMANDS = (*FINANCE_CMD, *SYNC_FINANCE_CMD, "GetAccountByLogin", "HealthCheck")
OUT_COMMANDS = frozenset(c for c in LOAD_COMMANDS if c.startswith(("BalanceOut", "CreditOut")))
COMMENT = "loadgen"
MIX_TABLE_SIZE = 1000  # the weighted mix is unrolled into a table this long, cycled per request


@dataclass
class LoadSpec:
    """One load run. Closed loop unless `rate` is set; stops after `duration_s` or `requests`,
    whichever comes first when both are set (at least one must be)."""

    host: str = "127.0.0.1"
    port: int = 8080
    connections: int = 50
    inflight: int = 4  # closed loop: requests outstanding per connection
    rate: float | None = None  # open loop: total requests/s, latency from the intended send time
    duration_s: float | None = 10.0
    requests: int | None = None
    warmup_s: float = 0.0  # traffic before measuring starts (not recorded)
    mix: dict[str, float] = field(default_factory=lambda: {"CreditInSync": 1.0})
    accounts: int = 100  # logins first_login .. first_login + accounts - 1
    first_login: int = 100_000
    create_accounts: bool = False  # AddUser each login, then fund it so *Out commands succeed
    initial_balance: float = 1_000_000.0
    token: str | None = None  # sent once per connection, on its first request
    events: bool = False  # False: Unsubscribe from trade:event and balance:event first
    progress: bool = True
    timeout_s: float = 10.0  # a request unanswered this long counts as error client/TIMEOUT

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.connections < 1:
            raise ValueError(f"connections must be at least 1, got {self.connections}")
        if self.rate is None and self.inflight < 1:
            raise ValueError(f"inflight must be at least 1, got {self.inflight}")
        check_pacing(
            self.rate, "requests/s", self.duration_s, self.requests, self.warmup_s, self.timeout_s
        )
        if self.accounts < 1:
            raise ValueError(f"accounts must be at least 1, got {self.accounts}")
        if not self.mix:
            raise ValueError("the mix needs at least one command")
        for command, weight in self.mix.items():
            check_mix_entry(command, weight)

    @property
    def closed_loop(self) -> bool:
        return self.rate is None

    def logins(self) -> range:
        return range(self.first_login, self.first_login + self.accounts)

    def public(self) -> dict[str, Any]:
        """The settings for a report: everything but the token's value."""
        settings = {name: getattr(self, name) for name in self.__dataclass_fields__}
        settings["token"] = "<set>" if self.token else None
        settings["mix"] = dict(self.mix)
        return settings


def check_pacing(
    rate: float | None,
    rate_unit: str,
    duration_s: float | None,
    requests: int | None,
    warmup_s: float,
    timeout_s: float,
) -> None:
    """The checks a load run and a settlement simulation share: open-loop rate (in `rate_unit`),
    when to stop, warmup and timeout; ValueError naming the first bad one."""
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of {rate_unit}, got {rate}")
    if duration_s is None and requests is None:
        raise ValueError("give a duration or a number of requests")
    if duration_s is not None and not (0 < duration_s < math.inf):
        raise ValueError(f"duration must be positive, got {duration_s}")
    if requests is not None and requests < 1:
        raise ValueError(f"requests must be at least 1, got {requests}")
    if not 0 <= warmup_s < math.inf:
        raise ValueError(f"warmup must be zero or positive, got {warmup_s}")
    if not timeout_s > 0:
        raise ValueError(f"timeout must be positive, got {timeout_s}")


def check_weight(name: str, weight: float) -> None:
    if not (weight > 0 and math.isfinite(weight)):
        raise ValueError(f"weight of {name} must be a positive number, got {weight}")


def check_mix_entry(command: str, weight: float) -> None:
    if command not in LOAD_COMMANDS:
        raise ValueError(
            f"unknown command {command!r} in the mix; known: {', '.join(LOAD_COMMANDS)}"
        )
    check_weight(command, weight)


def parse_mix(text: str) -> dict[str, float]:
    """`"CreditInSync=3,GetAccountByLogin=1"` -> weights; a bare name weighs 1."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight_text = part.strip().partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"empty command name in mix {text!r}")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ValueError(f"weight of {name} is not a number: {weight_text!r}") from None
        check_mix_entry(name, weight)
        mix[name] = mix.get(name, 0.0) + weight
    return mix


def mix_table(mix: dict[str, float], size: int = MIX_TABLE_SIZE) -> list[str]:
    """The mix unrolled by smooth weighted round-robin: exact proportions, evenly spread."""
    total = sum(mix.values())
    credit = dict.fromkeys(mix, 0.0)
    table = []
    for _ in range(size):
        for name, weight in mix.items():
            credit[name] += weight
        pick = max(credit, key=lambda name: credit[name])
        credit[pick] -= total
        table.append(pick)
    return table


class RequestSource:
    """The command and data of each next request.

    Logins turn fastest and the unrolled mix advances once per round of logins, so every login
    gets the mix in its own proportions: with In and Out alternating over two logins, indexing
    both by the request number would send every In to one login and every Out to the other,
    which would drain it.
    """

    def __init__(self, mix: dict[str, float], logins: range) -> None:
        self._table = mix_table(mix)
        self._logins = list(logins)
        self._seq = 0

    def next(self) -> tuple[str, dict[str, Any]]:
        seq = self._seq = self._seq + 1
        logins = self._logins
        command = self._table[seq // len(logins) % len(self._table)]
        return command, request_data(command, logins[seq % len(logins)], seq)


def request_data(command: str, login: int, seq: int) -> dict[str, Any]:
    """The `data` of request number `seq` (amounts 1.00 .. 9.99, negative for *Out)."""
    if command == "HealthCheck":
        return {}
    if command == "GetAccountByLogin":
        return {"login": login}
    amount = (100 + seq * 37 % 900) / 100
    if command in OUT_COMMANDS:
        amount = -amount
    return {"login": login, "amount": amount, "comment": COMMENT}
