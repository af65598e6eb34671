"""The conformance kit: `run_kit(KitOptions(...))` as a library, `main(argv)` behind
`manager-gateway settlement check` (or `python -m gateway_bench.settlement.kit`).

    python -m gateway_bench.settlement.kit --url http://127.0.0.1:8081/api --login 7001 \\
        --currency USD

runs the cases of docs/settlement.md section 10 against one funded wallet, one at a time, each
checked against the wallet before and after; prints PASS/FAIL per case with a one-line reason,
the cases whose money cannot be taken back with their net effect, and exits 0 when every case
passed, 1 otherwise (2 on bad arguments). The last case, `final_balance`, checks that the wallet
holds its starting amount plus everything the kit saw confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from . import cases, probes
from .kitreport import DEFAULT_UNKNOWN_LOGIN, CaseResult, KitOptions, KitReport
from .kitsession import KIT_AMOUNT, Case, CaseFailed, KitSession
from .money import MAX_AMOUNT, parse_amount, quantum
from .platform import PLATFORM_TIMEOUT_S, PlatformClient, PlatformError

__all__ = ["CASE_NAMES", "CaseResult", "KitOptions", "KitReport", "main", "run_kit"]

# Run order: the balance query first (every case relies on it), then money, then refusals.
CASES: tuple[Case, ...] = (probes.CASES[0], *cases.CASES, *probes.CASES[1:])
FINAL = "final_balance"
CASE_NAMES = (*(c.name for c in CASES), FINAL)
KIT_CONNECTIONS = 24  # room for the 20 concurrent copies
MIN_FUNDS_FACTOR = 10  # the wallet must hold this many times the kit's amount

EXIT_OK, EXIT_FAILED = 0, 1


async def run_kit(
    options: KitOptions, on_result: Callable[[CaseResult], None] | None = None
) -> KitReport:
    """Run every case not skipped against `options.url`; `on_result` sees each as it ends."""
    report = KitReport(options)
    async with PlatformClient(
        options.url,
        company_id=options.company_id,
        token=options.token,
        timeout_s=options.timeout_s,
        connections=KIT_CONNECTIONS,
    ) as client:
        try:
            kit = await _open_session(client, options)
        except (CaseFailed, PlatformError) as exc:
            report.setup_error = str(exc)
            return report
        report.start = kit.start
        for case in CASES:
            if case.name not in options.skip:
                report.results.append(await _run_case(kit, case))
                if on_result is not None:
                    on_result(report.results[-1])
        if FINAL not in options.skip:
            report.results.append(await _final_balance(kit))
            if on_result is not None:
                on_result(report.results[-1])
        try:
            report.end = await kit.wallet()
        except (CaseFailed, PlatformError):
            report.end = None
    return report


async def _open_session(client: PlatformClient, options: KitOptions) -> KitSession:
    user_name = options.user_name or f"kit-{options.login}"
    answer = await client.balance(options.login, user_name, options.currency)
    if not answer.ok:
        raise CaseFailed(f"the balance query answered {answer.outcome} {answer.msg}".strip())
    digits = answer.data.get("amountDigits")
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 8:
        raise CaseFailed(f"the balance query's amountDigits is {digits!r}")
    try:
        start = parse_amount(answer.data.get("amount"))
    except ValueError as exc:
        raise CaseFailed(f"the balance query's amount: {exc}") from exc
    need = KIT_AMOUNT.quantize(quantum(digits)) * MIN_FUNDS_FACTOR
    if not need <= start <= MAX_AMOUNT - need:
        raise CaseFailed(
            f"wallet {options.login} holds {start}: fund it with {need} to {MAX_AMOUNT - need}"
        )
    return KitSession(
        client,
        options.login,
        user_name,
        options.currency,
        digits,
        start,
        unknown_login=options.unknown_login,
        stale_s=options.stale_s,
    )


async def _run_case(kit: KitSession, case: Case) -> CaseResult:
    """One case between two wallet reads; the after-read also proves the money adds up."""
    try:
        before = await kit.wallet()
    except (CaseFailed, PlatformError) as exc:
        return CaseResult(
            case.name, False, f"before the case: {exc}", irreversible=case.irreversible
        )
    kit.begin(before)
    passed, after = True, None
    try:
        reason = await case.run(kit)
        after = await kit.settle("at the end")
    except CaseFailed as exc:
        passed, reason = False, str(exc)
    except PlatformError as exc:
        passed, reason = False, f"no answer: {exc}"
    if after is None:
        try:
            after = await kit.wallet()
        except (CaseFailed, PlatformError):
            after = None
    return CaseResult(case.name, passed, reason, before, after, case.irreversible)


async def _final_balance(kit: KitSession) -> CaseResult:
    """The wallet equals its starting amount plus everything the kit saw confirmed."""
    try:
        end = await kit.wallet()
    except (CaseFailed, PlatformError) as exc:
        return CaseResult(FINAL, False, str(exc))
    confirmed = kit.ledger.moved(kit.login)
    expected = kit.start + confirmed
    if end != expected:
        reason = (
            f"holds {end}; start {kit.start} plus everything confirmed "
            f"({kit.fmt(confirmed)}) is {expected}"
        )
        return CaseResult(FINAL, False, reason, kit.start, end)
    return CaseResult(
        FINAL, True, f"{end} = start {kit.start} {kit.fmt(confirmed)} confirmed", kit.start, end
    )


def _skip_list(text: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(names - set(CASE_NAMES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown case(s) {', '.join(unknown)}")
    return names


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manager-gateway settlement check",
        description=(
            "Conformance kit for an External Settlement implementation (docs/settlement.md section "
            "10): plays the trading platform against one funded wallet, prints PASS/FAIL per "
            "case, exits 0 when all pass. The wallet is left as found except for the cases "
            "listed at the end (a transfer adds money, ABNORMAL_OVERTRADING deducts some)."
        ),
        epilog="cases, in run order: " + ", ".join(CASE_NAMES),
    )
    add = parser.add_argument
    add(
        "--url",
        required=True,
        help="base URL the routes hang under, e.g. http://127.0.0.1:8081/api",
    )
    add(
        "--login",
        type=int,
        required=True,
        help=(
            "a wallet account the kit may move money on, funded with at least "
            f"{MIN_FUNDS_FACTOR} x {KIT_AMOUNT:.2f} (the kit's amount at 2 decimals)"
        ),
    )
    add("--currency", required=True, help="that account's currency, e.g. USD")
    add("--company-id", type=int, default=1, help="companyId header (default 1)")
    add(
        "--unknown-login",
        type=int,
        default=DEFAULT_UNKNOWN_LOGIN,
        help=f"a login with no account, for ACCOUNT_NOT_FOUND (default {DEFAULT_UNKNOWN_LOGIN})",
    )
    add(
        "--token",
        default=os.environ.get("GATEWAY_SETTLEMENT_TOKEN"),
        help="bearer token (default: $GATEWAY_SETTLEMENT_TOKEN, the gateway's own setting)",
    )
    add("--user-name", help="userName to send (default kit-<login>)")
    add(
        "--timeout",
        type=_seconds,
        default=PLATFORM_TIMEOUT_S,
        help="seconds per request (default 3)",
    )
    add(
        "--stale-seconds",
        type=_seconds,
        default=3600.0,
        help="how far off (past, future) the REQUEST_EXPIRED probes' timestamp is (default 3600)",
    )
    add("--skip", type=_skip_list, default=frozenset(), help="comma-separated cases not to run")
    add("--json", type=Path, help="also write the report as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = KitOptions(
        url=args.url,
        login=args.login,
        currency=args.currency,
        company_id=args.company_id,
        unknown_login=args.unknown_login,
        token=args.token or None,
        user_name=args.user_name,
        timeout_s=args.timeout,
        stale_s=args.stale_seconds,
        skip=args.skip,
    )
    report = asyncio.run(
        run_kit(options, on_result=lambda result: print(result.line(), flush=True))
    )
    for line in report.closing_lines():
        print(line)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return EXIT_OK if report.passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
