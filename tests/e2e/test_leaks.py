"""Nothing a finished request used stays alive: checked on the live objects themselves."""

from __future__ import annotations

import asyncio
import gc

from manager_gateway.runtime.operations import Operation
from manager_gateway.waiters import Waiter

from ..conftest import Harness


def live(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


async def test_no_operation_or_waiter_outlives_its_answer(gw: Harness) -> None:
    """After a burst of Sync and async credits is answered, no Operation and no Waiter is
    alive: the main loop does not hold its last batch while it waits for the next."""
    client = await gw.client()
    await gw.add_user(client, 1001)
    sync = [
        client.send("CreditInSync", {"login": 1001, "amount": 1.0, "comment": "s"})
        for _ in range(40)
    ]
    plain = [
        client.send("CreditIn", {"login": 1001, "amount": 1.0, "comment": "a"}) for _ in range(40)
    ]
    answers = await asyncio.gather(*sync, *plain)
    assert {answer["status"] for answer in answers} == {200}
    await client.ok("HealthCheck")
    assert live(Operation) == 0
    assert live(Waiter) == 0
    assert gw.gateway.waiters.deadline_queue_length() == 0
