"""Settlement journal retention (docs/settlement.md, 9.1): a row is forgotten by the first commit
once `settlement_retention_days` have passed since it was made, to the second, on disk and in
memory alike; the same request is then applied again, as the documentation warns."""

from __future__ import annotations

from decimal import Decimal

import aiohttp

from ..conftest import GatewayFactory
from ..fakes import FakeClock
from ..platform import Platform, adjustment, base_url, cancellation, fund, settlement_gateway
from ..postgres import on_both_engines  # noqa: F401 (runs every test here on both engines)

DAY_S = 86400


async def test_a_journal_row_is_forgotten_at_its_retention_to_the_second(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    h = await settlement_gateway(make_gateway, clock=frozen_clock, settlement_retention_days=1)
    await fund(await h.client(), h, 8001, credit=100)

    def now() -> dict[str, str]:  # the header the gateway checks against its (frozen) clock
        return {"timestamp": str(int(frozen_clock.wall() * 1000))}

    async with aiohttp.ClientSession() as session:
        platform = Platform(base_url(h), session)
        old = adjustment(8001, "10.00")
        first = await platform.adjust(old, **now())
        assert first["code"] == "0"
        frozen_clock.advance(DAY_S - 1)
        other = await platform.adjust(
            adjustment(8001, "1.00"), **now()
        )  # commits; `old` is a second young
        assert other["code"] == "0"
        replay = await platform.adjust(old, **now())
        assert replay["data"] == first["data"]  # still remembered: a replay
        assert await h.gateway.runtime.journal_rows() == 2
        frozen_clock.advance(1)  # exactly the retention since `old`
        assert (await platform.adjust(adjustment(8001, "1.00"), **now()))["code"] == "0"
        assert await h.gateway.runtime.journal_rows() == 2  # `old` pruned, the new one added
        assert all(key[2] != old["requestUniqueNo"] for key in h.gateway.runtime.state.journal)
        again = await platform.adjust(old, **now())
        assert again["code"] == "0"
        assert again["data"]["order"] != first["data"]["order"]  # applied anew
        account = h.gateway.runtime.account(8001)
        assert account is not None and account.credit == Decimal("78.00")  # 100 - 10 - 1 - 1 - 10
    assert h.verify() == []


async def test_a_row_read_back_from_the_ledger_is_forgotten_at_its_retention_too(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """With a window of 4, an old row a replay brings back from the ledger is not kept past its
    retention behind younger rows: the replay after it is applied anew."""
    h = await settlement_gateway(
        make_gateway, clock=frozen_clock, settlement_retention_days=1, history_window=4
    )
    await fund(await h.client(), h, 8002, credit=100)

    def now() -> dict[str, str]:
        return {"timestamp": str(int(frozen_clock.wall() * 1000))}

    async with aiohttp.ClientSession() as session:
        platform = Platform(base_url(h), session)
        old = adjustment(8002, "10.00")
        first = await platform.adjust(old, **now())
        frozen_clock.advance(10)
        for _ in range(5):  # younger rows push `old` out of the window
            assert (await platform.adjust(adjustment(8002, "1.00"), **now()))["code"] == "0"
        assert all(key[2] != old["requestUniqueNo"] for key in h.gateway.runtime.state.journal)
        frozen_clock.advance(DAY_S - 11)
        replay = await platform.adjust(old, **now())  # read back from the ledger
        assert replay["data"] == first["data"]
        frozen_clock.advance(1)  # exactly the retention since `old`
        assert (await platform.adjust(adjustment(8002, "1.00"), **now()))["code"] == "0"
        again = await platform.adjust(old, **now())
        assert again["code"] == "0"
        assert again["data"]["order"] != first["data"]["order"]  # applied anew
    assert h.verify() == []


async def test_a_tombstone_past_its_retention_gives_way_to_its_adjustment(
    make_gateway: GatewayFactory, frozen_clock: FakeClock
) -> None:
    """A cancel that came before its adjustment leaves a tombstone that refuses the adjustment.
    Once the tombstone's retention has passed, the adjustment is applied, and its row in the
    ledger is an adjustment's throughout: the tombstone's row is replaced, not patched."""
    h = await settlement_gateway(make_gateway, clock=frozen_clock, settlement_retention_days=1)
    await fund(await h.client(), h, 8001, credit=100)

    def now() -> dict[str, str]:
        return {"timestamp": str(int(frozen_clock.wall() * 1000))}

    late = adjustment(8001, "10.00")
    number = late["requestUniqueNo"]
    async with aiohttp.ClientSession() as session:
        platform = Platform(base_url(h), session)
        await platform.cancel(cancellation(8001, number, "10.00"), **now())
        assert (await platform.adjust(late, **now()))["code"] != "0"
        assert h.stored(f"SELECT kind FROM settlement_journal WHERE number = '{number}'") == [
            ("tombstone",)
        ]
        frozen_clock.advance(DAY_S - 0.5)
        assert (await platform.adjust(adjustment(8001, "1.00"), **now()))["code"] == "0"
        frozen_clock.advance(0.5)  # the tombstone's retention: this commit forgets it
        assert (await platform.adjust(adjustment(8001, "1.00"), **now()))["code"] == "0"
        # PostgreSQL deletes rows at most once a second, so its row may still be there.
        applied = await platform.adjust(late, **now())
        assert applied["code"] == "0"
    rows = h.stored(f"SELECT kind, code FROM settlement_journal WHERE number = '{number}'")
    assert rows == [("adjustment", "0")]
    account = h.gateway.runtime.account(8001)
    assert account is not None and account.credit == Decimal("88.00")
    assert h.verify() == []
