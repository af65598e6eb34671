"""The platform's answer codes (docs/settlement.md, "Answers") and the refusal that carries one."""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    OK = "0"
    RECEIVED_NOT_PROCESSED = "US_0000001"  # cancel: that adjustment was refused
    NEVER_RECEIVED = "US_0000002"  # cancel: no such adjustment; a tombstone now blocks it
    INVALID_PARAMETER = "INVALID_PARAMETER"
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    DUPLICATE_REQUEST_MISMATCH = "DUPLICATE_REQUEST_MISMATCH"
    REQUEST_CANCELLED = "REQUEST_CANCELLED"
    REQUEST_EXPIRED = "REQUEST_EXPIRED"
    FORBIDDEN = "FORBIDDEN"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


#: Codes a cancel answers that mean "nothing to undo": final for the platform, not failures.
CANCEL_FINAL = frozenset({Code.OK, Code.RECEIVED_NOT_PROCESSED, Code.NEVER_RECEIVED})


class Refusal(Exception):
    """A request answered with a failure `code` and a sentence naming the field or reason."""

    def __init__(self, code: Code, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
