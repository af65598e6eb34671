"""The kit's money cases (docs/settlement.md sections 5 to 7 and 10): each operation type,
idempotency, cancels in every state of their adjustment, a cancel racing its adjustment,
ABNORMAL_OVERTRADING beyond the wallet, and the legacy transfer resent.

Cases put the wallet back with a counter-adjustment (NORMAL_CLOSE after OPEN_POSITION and the
other way round) rather than a cancel, so a broken cancel fails only the cancel cases.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import replace
from decimal import Decimal

from .kitsession import Case, CaseFailed, KitSession, checked, expect, registrar
from .money import MAX_AMOUNT
from .platform import (
    ABNORMAL_OVERTRADING,
    CANCEL,
    NEVER_RECEIVED,
    NORMAL_CLOSE,
    OPEN_POSITION,
    RECEIVED_NOT_PROCESSED,
    SUCCESS,
    Answer,
    Cancel,
    PlatformError,
    Transfer,
)

CONCURRENT_COPIES = 20
RACE_ROUNDS = 6  # half launch the adjustment first, half the cancel: both orders get a chance
TRANSFER_COPIES = 5

CASES: list[Case] = []
case = registrar(CASES)
irreversible = registrar(CASES, irreversible=True)


@case
async def open_position(kit: KitSession) -> str:
    """OPEN_POSITION takes its amount (a NORMAL_CLOSE gives it back)."""
    await kit.confirmed(OPEN_POSITION, kit.amount, "OPEN_POSITION")
    await kit.settle("after OPEN_POSITION")
    await kit.confirmed(NORMAL_CLOSE, kit.amount, "the NORMAL_CLOSE putting it back")
    return f"moved -{kit.amount}, answered 0"


@case
async def normal_close(kit: KitSession) -> str:
    """NORMAL_CLOSE adds its amount (an OPEN_POSITION takes it back)."""
    await kit.confirmed(NORMAL_CLOSE, kit.amount, "NORMAL_CLOSE")
    await kit.settle("after NORMAL_CLOSE")
    await kit.confirmed(OPEN_POSITION, kit.amount, "the OPEN_POSITION taking it back")
    return f"moved +{kit.amount}, answered 0"


@irreversible
async def abnormal_overtrading(kit: KitSession) -> str:
    """ABNORMAL_OVERTRADING within the wallet: deducted (deduct policies) or ignored."""
    answer = await kit.confirmed(ABNORMAL_OVERTRADING, kit.amount, "ABNORMAL_OVERTRADING")
    moved = kit.moved_by(answer, "ABNORMAL_OVERTRADING")
    if moved is not None and moved not in (-kit.amount, 0):
        raise CaseFailed(f"data.amount says {moved}: neither -{kit.amount} nor 0 (ignored)")
    await kit.settle("after ABNORMAL_OVERTRADING")
    return f"asked -{kit.amount}, moved {kit.fmt(kit.implied)}"


@case
async def duplicate_adjustment(kit: KitSession) -> str:
    """The same adjustment twice: one movement, the same answer."""
    adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
    body = adjustment.body()  # byte for byte the same request, requestTime included
    first = await kit.send(adjustment, body)
    expect(first, SUCCESS, "the adjustment")
    second = await kit.send(adjustment, body)
    expect(second, SUCCESS, "the same adjustment again")
    await kit.settle("after the same adjustment twice")
    if second.data != first.data:
        raise CaseFailed(f"the replay answered data {second.data}, the first {first.data}")
    await kit.confirmed(NORMAL_CLOSE, kit.amount, "the NORMAL_CLOSE putting it back")
    return "one movement, the replay answered as the first"


@case
async def duplicate_mismatch(kit: KitSession) -> str:
    """The same number with another amount: DUPLICATE_REQUEST_MISMATCH, no second movement."""
    adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
    expect(await kit.send(adjustment), SUCCESS, "the adjustment")
    other = replace(adjustment, amount=adjustment.amount + kit.unit)
    answer = await kit.send(other)
    expect(answer, "DUPLICATE_REQUEST_MISMATCH", f"the same number with amount {other.amount}")
    await kit.settle("after the mismatching copy")
    await kit.confirmed(NORMAL_CLOSE, kit.amount, "the NORMAL_CLOSE putting it back")
    return "DUPLICATE_REQUEST_MISMATCH, one movement"


@case
async def concurrent_duplicates(kit: KitSession) -> str:
    """20 identical adjustments at once: all answered 0 alike, one movement."""
    adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
    body = adjustment.body()
    results = await asyncio.gather(
        *(kit.send(adjustment, body) for _ in range(CONCURRENT_COPIES)), return_exceptions=True
    )
    answers = [r for r in results if isinstance(r, Answer)]
    failures = [r for r in results if not isinstance(r, Answer)]
    if failures:
        raise CaseFailed(f"{len(failures)} of {CONCURRENT_COPIES} copies: {failures[0]}")
    codes = Counter(answer.outcome for answer in answers)
    if set(codes) != {SUCCESS}:
        raise CaseFailed(f"expected 0 for every copy, got {dict(codes)}")
    await kit.settle(f"after {CONCURRENT_COPIES} concurrent copies")
    if any(answer.data != answers[0].data for answer in answers):
        raise CaseFailed("the copies were answered with different data")
    await kit.confirmed(NORMAL_CLOSE, kit.amount, "the NORMAL_CLOSE putting it back")
    return f"{CONCURRENT_COPIES} answers 0, one movement"


@case
async def cancel_applied(kit: KitSession) -> str:
    """Cancel of an applied adjustment: money back; the cancel again and a second cancel of
    the same adjustment answer 0 and reverse nothing more."""
    adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
    expect(await kit.send(adjustment), SUCCESS, "the adjustment")
    cancel = Cancel(adjustment, kit.number(), "kit: cancel of an applied adjustment")
    body = cancel.body()
    expect(await kit.cancel(cancel, body), SUCCESS, "the cancel")
    await kit.settle("after the cancel")
    expect(await kit.cancel(cancel, body), SUCCESS, "the same cancel again")
    await kit.settle("after the same cancel again")
    another = Cancel(adjustment, kit.number(), "kit: second cancel of the same adjustment")
    expect(await kit.cancel(another), SUCCESS, "a second cancel (new number)")
    await kit.settle("after a second cancel of the same adjustment")
    return "money back once; the resent cancel and a second cancel answered 0"


@case
async def cancel_refused(kit: KitSession) -> str:
    """Cancel of a refused adjustment (OPEN_POSITION beyond the wallet): US_0000001."""
    size = kit.case_before + kit.amount
    if size > MAX_AMOUNT:
        raise CaseFailed(f"the wallet holds too much to overdraw with at most {MAX_AMOUNT}")
    adjustment = kit.adjustment(OPEN_POSITION, size)
    expect(await kit.send(adjustment), "INSUFFICIENT_FUNDS", f"OPEN_POSITION of {size}")
    cancel = Cancel(adjustment, kit.number(), "kit: cancel of a refused adjustment")
    body = cancel.body()
    expect(await kit.cancel(cancel, body), RECEIVED_NOT_PROCESSED, "its cancel")
    expect(await kit.cancel(cancel, body), RECEIVED_NOT_PROCESSED, "the same cancel again")
    await kit.settle("after the cancels")
    return "INSUFFICIENT_FUNDS, then US_0000001 twice"


@case
async def cancel_unknown_then_late_adjustment(kit: KitSession) -> str:
    """Cancel of an unknown number: US_0000002; the late adjustment: REQUEST_CANCELLED."""
    adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
    cancel = Cancel(adjustment, kit.number(), "kit: cancel before the adjustment")
    body = cancel.body()
    expect(await kit.cancel(cancel, body), NEVER_RECEIVED, "the cancel of an unknown number")
    expect(await kit.cancel(cancel, body), NEVER_RECEIVED, "the same cancel again")
    late = adjustment.body()
    expect(await kit.send(adjustment, late), "REQUEST_CANCELLED", "the late adjustment")
    expect(await kit.send(adjustment, late), "REQUEST_CANCELLED", "the late adjustment again")
    await kit.settle("after the late adjustment")
    return "US_0000002, then REQUEST_CANCELLED twice, no movement"


@case
async def cancel_races_adjustment(kit: KitSession) -> str:
    """A cancel sent together with its adjustment: answers consistent with one order, and
    the wallet where it started."""
    orders: Counter[str] = Counter()
    for round_ in range(RACE_ROUNDS):
        adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
        cancel = Cancel(adjustment, kit.number(), "kit: cancel racing its adjustment")
        cancel_answer: Answer
        if round_ % 2 == 0:
            adjusted, cancel_answer = await asyncio.gather(
                kit.post_adjustment(adjustment), kit.client.post(CANCEL, cancel.body())
            )
        else:
            cancel_answer, adjusted = await asyncio.gather(
                kit.client.post(CANCEL, cancel.body()), kit.post_adjustment(adjustment)
            )
        kit.record_adjustment(adjustment, adjusted)  # in logical order, whatever came back first
        kit.record_cancel(cancel, cancel_answer)
        checked(adjusted)
        checked(cancel_answer)
        pair = (adjusted.outcome, cancel_answer.outcome)
        if pair == (SUCCESS, SUCCESS):
            orders["adjustment first"] += 1
        elif pair == ("REQUEST_CANCELLED", NEVER_RECEIVED):
            orders["cancel first"] += 1
        else:
            raise CaseFailed(
                f"round {round_ + 1}: adjustment {pair[0]}, cancel {pair[1]}: "
                "consistent with neither order"
            )
        await kit.settle(f"after round {round_ + 1}")
    if kit.implied:
        raise CaseFailed(f"the wallet did not end where it started ({kit.fmt(kit.implied)})")
    return f"{RACE_ROUNDS} rounds: " + ", ".join(f"{n} {order}" for order, n in orders.items())


@irreversible
async def overtrading_beyond_wallet(kit: KitSession) -> str:
    """ABNORMAL_OVERTRADING beyond the wallet: deduct what it holds, INSUFFICIENT_FUNDS, or
    ignore; the wallet moves by exactly data.amount. Most of the wallet is parked in an
    OPEN_POSITION first (and given back after, pass or fail), so little is at stake."""
    keep = min(kit.amount, kit.case_before)
    park = kit.case_before - keep
    if park:
        await kit.confirmed(OPEN_POSITION, park, f"OPEN_POSITION parking {park}")
    try:
        verdict = await _overdraw(kit, keep)
    except (CaseFailed, PlatformError):
        if park:  # best effort: the case's own failure is the reason to report
            with contextlib.suppress(CaseFailed, PlatformError):
                await kit.confirmed(NORMAL_CLOSE, park, "the NORMAL_CLOSE giving it back")
        raise
    if park:
        await kit.confirmed(NORMAL_CLOSE, park, f"the NORMAL_CLOSE giving back {park}")
        await kit.settle("after giving back the parked amount")
    return verdict


async def _overdraw(kit: KitSession, keep: Decimal) -> str:
    """ABNORMAL_OVERTRADING for more than the `keep` the wallet holds; the policy it shows."""
    ask = keep + kit.amount
    adjustment = kit.adjustment(ABNORMAL_OVERTRADING, ask)
    answer = await kit.send(adjustment)
    if answer.outcome == "INSUFFICIENT_FUNDS":
        policy, moved = "deduct (all or nothing)", Decimal(0)
    else:
        expect(answer, SUCCESS, f"ABNORMAL_OVERTRADING of -{ask} with {keep} in the wallet")
        said = kit.moved_by(answer, "ABNORMAL_OVERTRADING")
        if said is None:
            raise CaseFailed(
                f"answered 0 without data.amount, so it claims the -{ask} asked, "
                f"more than the {keep} the wallet held"
            )
        moved = said
        if moved == -keep:
            policy = "deduct_available"
        elif moved == 0:
            policy = "ignore"
        else:
            raise CaseFailed(f"data.amount {moved}: neither the wallet's -{keep} nor nothing")
    await kit.settle("after ABNORMAL_OVERTRADING beyond the wallet")
    return f"{policy}: asked -{ask} with {keep} held, moved {kit.fmt(moved)}"


@irreversible
async def transfer_resent(kit: KitSession) -> str:
    """A transfer to CP resent 5 times: every copy answered 0, one movement."""
    transfer = Transfer(
        kit.login, kit.currency, kit.amount, kit.digits, kit.number(), "kit: resent transfer"
    )
    body = transfer.body()
    for copy in range(TRANSFER_COPIES):
        expect(await kit.transfer(transfer, body), SUCCESS, f"copy {copy + 1} of the transfer")
    await kit.settle(f"after {TRANSFER_COPIES} copies")
    return f"{TRANSFER_COPIES} answers 0, moved +{kit.amount} once"
