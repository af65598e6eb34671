"""The settlement journal's rows: every request the platform sent that the main loop decided.

The runtime only stores and publishes them (through the `Storage` seam, in the same transaction as
the finance records they caused); what they mean is the settlement package's business. A row is a
NamedTuple of plain values, so the garbage collector untracks it (see records.py).
"""

from __future__ import annotations

from typing import NamedTuple

#: The request numbers adjustments, cancels and tombstones share (`requestUniqueNo`).
REQUESTS = "request"
#: Transfers' own numbers (`txid`).
TRANSFERS = "txid"

JournalKey = tuple[int, str, str]  # (company, space, number)


class JournalRow(NamedTuple):
    company: int
    space: str  # REQUESTS or TRANSFERS
    number: str
    kind: str  # adjustment, cancel, transfer or tombstone
    fingerprint: str  # a keyed digest of the request's content, to tell a replay from a mismatch
    code: str  # the code it was answered with ("0" = done)
    login: int | None
    user_name: str  # the platform's own user id, recorded for reconciliation
    finance_order: int | None  # the finance record it made or reversed
    amount: str  # what it moved, signed, as decimal text; "0" when nothing moved
    reverses: str | None  # a cancel: the number it cancels
    cancelled_by: str | None  # an adjustment: the cancel that reversed it
    answer_json: bytes  # the answer's `msg` and `data`, replayed as they were
    created_at: float

    @property
    def key(self) -> JournalKey:
        return (self.company, self.space, self.number)
