"""docs/protocol.md's tables written out as data, for tests to check the gateway against.

Kept apart from the gateway's own tables on purpose: a test that compared the registry with
itself could not fail.
"""

from __future__ import annotations

from manager_gateway.session.access import SessionType

U, M, D, A = SessionType.USER, SessionType.MANAGER, SessionType.DEALER, SessionType.ADMIN
STAFF = frozenset({M, D, A})
EVERYONE = frozenset({U, M, D, A})

FINANCE = [
    "BalanceIn",
    "BalanceOut",
    "CreditIn",
    "CreditOut",
    "BalanceInSync",
    "BalanceOutSync",
    "CreditInSync",
    "CreditOutSync",
]
FINANCE_DELETES = ["DeleteBalance", "DeleteCredit", "DeleteBalanceSync", "DeleteCreditSync"]

#: Section 3: command -> session types allowed ("own login only" still means allowed by role;
#: the account check comes later). SYSTEM and FIX appear nowhere.
PROTOCOL_ROLES: dict[str, frozenset[SessionType]] = {
    **{name: STAFF for name in FINANCE},
    **{name: STAFF for name in FINANCE_DELETES},
    "AddUser": frozenset({M, A}),
    "GetAccountByLogin": STAFF,
    "GetUserBalanceList": STAFF,
    "MngGetTradesByFilter": STAFF,
    "GetGroups": STAFF,
    "GetTradeByOrder": EVERYONE,
    "Subscribe": EVERYONE,
    "Unsubscribe": EVERYONE,
    "SubscribeAll": EVERYONE,
    "UnsubscribeAll": EVERYONE,
    "HealthCheck": EVERYONE,
}

#: Section 7: the commands that change state (and are keyed for idempotency).
STATE_CHANGING = frozenset({*FINANCE, *FINANCE_DELETES, "AddUser"})
