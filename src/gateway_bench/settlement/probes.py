"""The kit's input cases: the balance query's formatting, and requests the contract says to
refuse without moving money (missing headers, bad types, wrong currency, unknown account, too
many decimals, stale or future timestamps). Each probe is an OPEN_POSITION under a fresh number,
so one wrongly accepted shows as money moved as well as a wrong code."""

from __future__ import annotations

from typing import Any

from .kitsession import Case, CaseFailed, KitSession, checked, expect, registrar
from .money import MAX_DIGITS, format_amount, has_exact_digits
from .platform import BALANCE, OPEN_POSITION, balance_body, now_ms

INVALID = "INVALID_PARAMETER"

CASES: list[Case] = []
case = registrar(CASES)


@case
async def balance_format(kit: KitSession) -> str:
    """The balance query answers the wallet as a string with exactly amountDigits decimals."""
    body = balance_body(kit.login, kit.user_name, kit.currency)
    answer = checked(await kit.client.post(BALANCE, body))
    expect(answer, "0", "the balance query")
    data = answer.data
    digits, amount = data.get("amountDigits"), data.get("amount")
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= MAX_DIGITS:
        raise CaseFailed(f"amountDigits is {digits!r}, not an integer 0 to {MAX_DIGITS}")
    if not has_exact_digits(amount, digits):
        raise CaseFailed(f"amount {amount!r} is not a string with exactly {digits} decimals")
    if data.get("currency") != kit.currency:
        raise CaseFailed(f"currency {data.get('currency')!r}, asked about {kit.currency!r}")
    if "userName" in data and data["userName"] != kit.user_name:
        raise CaseFailed(f"userName {data['userName']!r}, asked about {kit.user_name!r}")
    return f'"amount": "{amount}", "amountDigits": {digits}'


@case
async def missing_headers(kit: KitSession) -> str:
    """An adjustment without trace, or without timestamp: refused (HTTP 4xx or
    INVALID_PARAMETER), no movement."""
    answers = []
    for header in ("trace", "timestamp"):
        adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
        answer = await kit.send(adjustment, headers={header: None})
        if not (400 <= answer.status < 500 or answer.outcome == INVALID):
            raise CaseFailed(f"an adjustment without {header}: answered {answer.outcome}")
        answers.append(f"no {header}: {answer.outcome}")
    await kit.settle("after the adjustments without headers")
    return ", ".join(answers)


def _bad_bodies(kit: KitSession) -> list[tuple[str, Any]]:
    """(what, mutation): bytes replace the body, a dict patches fields (None removes one)."""
    return [
        ("a body that is not JSON", b"{not json"),
        ("a body that is a JSON array", b'["OPEN_POSITION"]'),
        ("amount as a list", {"amount": [format_amount(kit.amount, kit.digits)]}),
        ("amountDigits as text", {"amountDigits": "two"}),
        ("orderId as text", {"orderId": "order-1"}),
        ("requestUniqueNo as an object", {"requestUniqueNo": {"no": 1}}),
        ("no requestUniqueNo", {"requestUniqueNo": None}),
    ]


@case
async def bad_types(kit: KitSession) -> str:
    """Bodies that are not a JSON object, fields of the wrong type or missing:
    INVALID_PARAMETER, no movement."""
    for what, mutation in _bad_bodies(kit):
        adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
        body: Any = mutation
        if isinstance(mutation, dict):
            body = adjustment.body()
            for name, value in mutation.items():
                if value is None:
                    del body[name]
                else:
                    body[name] = value
        expect(await kit.send(adjustment, body), INVALID, what)
    await kit.settle("after the malformed adjustments")
    return f"{len(_bad_bodies(kit))} malformed adjustments answered {INVALID}"


@case
async def wrong_currency(kit: KitSession) -> str:
    """An adjustment and a balance query in another currency: CURRENCY_MISMATCH."""
    other = "XTS" if kit.currency != "XTS" else "XXX"  # ISO 4217's codes for testing
    adjustment = kit.adjustment(OPEN_POSITION, kit.amount, currency=other)
    expect(await kit.send(adjustment), "CURRENCY_MISMATCH", f"an adjustment in {other}")
    query = await kit.client.post(BALANCE, balance_body(kit.login, kit.user_name, other))
    expect(checked(query), "CURRENCY_MISMATCH", f"a balance query in {other}")
    await kit.settle("after the adjustment in another currency")
    return f"{other}: CURRENCY_MISMATCH for both"


@case
async def unknown_account(kit: KitSession) -> str:
    """An adjustment and a balance query for a login that does not exist: ACCOUNT_NOT_FOUND."""
    login = kit.unknown_login
    adjustment = kit.adjustment(OPEN_POSITION, kit.amount, login=login)
    expect(await kit.send(adjustment), "ACCOUNT_NOT_FOUND", f"an adjustment for login {login}")
    query = await kit.client.post(BALANCE, balance_body(login, kit.user_name, kit.currency))
    expect(checked(query), "ACCOUNT_NOT_FOUND", f"a balance query for login {login}")
    await kit.settle("after the adjustment for an unknown login")
    return f"login {login}: ACCOUNT_NOT_FOUND for both"


@case
async def too_many_decimals(kit: KitSession) -> str:
    """An amount with more decimals than amountDigits, or than the currency has:
    INVALID_PARAMETER."""
    text = format_amount(kit.amount, kit.digits)
    text += "1" if "." in text else ".1"
    probes = [(f"amount {text} with amountDigits {kit.digits}", kit.digits)]
    if kit.digits < MAX_DIGITS:
        probes.append((f"amount {text} with amountDigits {kit.digits + 1}", kit.digits + 1))
    for what, digits in probes:
        adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
        body = {**adjustment.body(), "amount": text, "amountDigits": digits}
        expect(await kit.send(adjustment, body), INVALID, what)
    await kit.settle("after the over-precise amounts")
    return "; ".join(what for what, _ in probes) + f": {INVALID}"


@case
async def stale_timestamp(kit: KitSession) -> str:
    """A timestamp header far in the past, or the future: REQUEST_EXPIRED, no movement."""
    skew_ms = int(kit.stale_s * 1000)
    for what, stamp in (("past", now_ms() - skew_ms), ("future", now_ms() + skew_ms)):
        adjustment = kit.adjustment(OPEN_POSITION, kit.amount)
        answer = await kit.send(adjustment, headers={"timestamp": str(stamp)})
        expect(answer, "REQUEST_EXPIRED", f"a timestamp {kit.stale_s:g} s in the {what}")
    await kit.settle("after the expired adjustments")
    return f"{kit.stale_s:g} s in the past and the future: REQUEST_EXPIRED"
