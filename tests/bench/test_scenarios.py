"""The fan-out, idle and pending-Sync scenarios at a small scale against an in-process gateway,
and their pure helpers.

The scenario tests check each scenario's own bookkeeping (every event, connection and answer
accounted for), never how fast anything was.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil
import pytest

from gateway_bench.fanout import FanoutSpec, run_fanout
from gateway_bench.idle import IdleSpec, run_idle
from gateway_bench.pending import PendingRun, PendingSpec, run_pending, timeouts_in_log
from gateway_bench.sessions import percentile

from ..conftest import GatewayFactory, wait_until


def own_rss() -> int:
    return int(psutil.Process().memory_info().rss)


@pytest.mark.slow
async def test_fanout_counts_every_event_once_per_listener(make_gateway: GatewayFactory) -> None:
    """Each listener hears one trade and one balance event per operation, no more, no less."""
    gw = await make_gateway()
    spec = FanoutSpec(listeners=2, rate=200, duration_s=0.5, warmup_s=0.2, accounts=5)
    result = await run_fanout("127.0.0.1", gw.port, gw.token(), spec)
    sent = result["operations_sent"]
    assert sent > 0
    assert result["writer_answers"] == {"200": sent}
    assert result["events_expected"] == result["events_delivered"] == 2 * sent * 2
    assert result["every_event_once"] and result["drained"]
    assert result["events_missing"] == result["events_duplicated"] == result["events_stray"] == 0
    assert result["delay_ms"]["count"] == 2 * 2 * result["operations_measured"]
    assert [p["events"] for p in result["per_listener"]] == [2 * sent, 2 * sent]


@pytest.mark.slow
async def test_idle_holds_and_releases_every_connection(make_gateway: GatewayFactory) -> None:
    """200 sessions are opened, authenticated, held, and all closed again afterwards."""
    gw = await make_gateway()
    result = await run_idle("127.0.0.1", gw.port, gw.token(), IdleSpec(connections=200,
                                                                       parallel=50), own_rss)
    assert result["connected"] == result["authenticated"] == result["held_open"] == 200
    assert result["request_outcomes"] == {"200": 200}
    assert result["health_check"] == result["health_check_after_close"] == "200"
    assert result["rss_held_mb"] > 0
    probe = await gw.client()
    await wait_until(probe, lambda: len(gw.gateway.connections) == 1)


@pytest.mark.slow
async def test_pending_sync_answers_every_request_504_and_leaks_no_waiter(
    make_gateway: GatewayFactory,
) -> None:
    """Against a held ledger lock every Sync request gets exactly one 504, then the queue drains
    and the gateway holds no waiter."""
    gw = await make_gateway(sync_timeout_ms=300)
    spec = PendingSpec(requests=500, connections=5, max_per_connection=100,
                       sync_timeout_ms=300, accounts=5)
    result = await run_pending("127.0.0.1", gw.port, gw.token(), gw.data_dir / "ledger.db",
                               spec, own_rss)
    assert result["sent"] == 500
    assert result["answers"] == {"504/SYNC_TIMEOUT": 500}
    assert result["timed_out_on_time"] + result["timed_out_late"] == 500
    assert result["missing"] == result["not_504"] == result["duplicates"] == 0
    assert result["drain"]["drained"]
    assert result["ledger_records_after"] >= 1  # the sentinel, at least, was applied
    probe = await gw.client()
    await wait_until(probe, lambda: gw.gateway.waiters.pending_count() == 0)
    assert gw.gateway.waiters.bound_count() == 0


async def test_timeouts_are_found_in_the_gateway_log(tmp_path: Path) -> None:
    """The gateway's sync_timeout lines are matched to this run's requests by extID; other
    lines and other runs' requests are ignored."""
    run = PendingRun(PendingSpec(requests=3, sync_timeout_ms=1000, slack_ms=100))
    for seq in range(3):
        run.sent_at[seq] = 100.0 + seq
        run.received_at[seq] = 100.0 + seq + 1.2
    run.clock_offset = 1_700_000_000.0

    def line(ext_id: str, at: float) -> bytes:
        stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
        return orjson.dumps({"ext_id": ext_id, "event": "sync_timeout", "timestamp": stamp})

    log = tmp_path / "gateway.log"
    log.write_bytes(b"\n".join([
        line(f"{run.ext_prefix}0", 1_700_000_101.0),  # 1.0 s after its send: on time
        line(f"{run.ext_prefix}2", 1_700_000_103.5),  # 1.5 s: late
        line("someone-else-1", 1_700_000_101.0),
        b'{"event": "batch_committed"}', b"manager-gateway listening on 127.0.0.1:1",
    ]))
    found = timeouts_in_log(log, run)
    assert found is not None
    assert (found["count"], found["logged_late"]) == (2, 1)
    assert found["send_to_log_ms"]["p0"] == 1000.0 and found["send_to_log_ms"]["p100"] == 1500.0


def test_percentile_is_nearest_rank() -> None:
    """Nearest-rank percentiles of a sorted list; None for an empty one."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([], 50) is None
