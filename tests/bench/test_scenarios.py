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
from gateway_bench.monitor import free_port
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
    result = await run_idle(
        "127.0.0.1", gw.port, gw.token(), IdleSpec(connections=200, parallel=50), own_rss
    )
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
    """Behind a plug stalled on a held ledger lock every Sync request gets exactly one 504; after
    the release only the plug and the sentinel are recorded, and the gateway holds no waiter."""
    metrics_port = free_port()
    gw = await make_gateway(
        sync_timeout_ms=300, ledger_busy_timeout_ms=600_000, metrics_port=metrics_port
    )
    spec = PendingSpec(
        requests=500,
        connections=5,
        max_per_connection=100,
        sync_timeout_ms=300,
        metrics_port=metrics_port,
    )
    result = await run_pending(
        "127.0.0.1", gw.port, gw.token(), gw.data_dir / "ledger.db", spec, own_rss
    )
    assert result["sent"] == 500
    assert result["answers"] == {"504/SYNC_TIMEOUT": 500}
    assert result["timed_out_on_time"] + result["timed_out_late"] == 500
    assert result["missing"] == result["not_504"] == result["duplicates"] == 0
    assert result["stall"]["queued_operations"] == 0  # the plug's batch was taken, then stalled
    assert result["stall"]["plug_answer"] == "504/SYNC_TIMEOUT"
    assert result["drain"]["drained"]
    assert result["ledger_records_after"] == 2 and result["ledger_as_expected"]
    assert result["ledger_commit_failures"] == 0
    assert result["waiters_after"] == 0
    assert len(result["allocated_blocks_after_readings"]) == spec.settle_scrapes
    for name in ("before", "peak", "after"):
        assert result[f"allocated_blocks_{name}"] > 0
    probe = await gw.client()
    await wait_until(probe, lambda: gw.gateway.waiters.pending_count() == 0)
    assert gw.gateway.waiters.bound_count() == 0


async def test_timeout_sweeps_in_the_gateway_log_are_matched_in_send_order(
    tmp_path: Path,
) -> None:
    """Each sync_timeouts sweep is matched to the next requests in send order; lines before
    the first send and other events are ignored."""
    run = PendingRun(PendingSpec(requests=3, sync_timeout_ms=1000, slack_ms=100))
    for seq, sent in enumerate((100.0, 100.2, 100.1)):  # sent in the order 0, 2, 1
        run.sent_at[seq] = sent
        run.received_at[seq] = sent + 1.2
    run.sent = 3
    run.clock_offset = 1_700_000_000.0

    def line(expired: int, at: float) -> bytes:
        stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
        return orjson.dumps({"expired": expired, "event": "sync_timeouts", "timestamp": stamp})

    log = tmp_path / "gateway.log"
    log.write_bytes(
        b"\n".join(
            [
                line(5, 1_699_999_000.0),  # an earlier process's sweep
                line(2, 1_700_000_101.05),  # requests 0 and 2: 1.05 s and 0.95 s after their sends
                b'{"event": "batch_committed"}',
                b"manager-gateway listening on 127.0.0.1:1",
                line(1, 1_700_000_101.5),  # request 1: 1.3 s after its send, late
            ]
        )
    )
    found = timeouts_in_log(log, run)
    assert found is not None
    assert (found["sweeps"], found["expired"], found["timed_out_late_by_gateway"]) == (2, 3, 1)
    assert found["send_to_sweep_ms"]["p0"] == 950.0
    assert found["send_to_sweep_ms"]["p100"] == 1300.0


async def test_the_plugs_timeout_is_not_matched_to_a_request(tmp_path: Path) -> None:
    """The plug's waiter expires first, in the first sweep after its send: the requests are
    matched from the waiter after it."""
    run = PendingRun(PendingSpec(requests=2, sync_timeout_ms=1000, slack_ms=100))
    run.clock_offset = 1_700_000_000.0
    run.plug_sent, run.plug_answer = 99.9, "504/SYNC_TIMEOUT"
    for seq, sent in enumerate((100.0, 100.5)):
        run.sent_at[seq] = sent
        run.received_at[seq] = sent + 1.05
    run.sent = 2
    log = tmp_path / "gateway.log"
    log.write_bytes(
        b"\n".join(
            orjson.dumps(
                {
                    "expired": expired,
                    "event": "sync_timeouts",
                    "timestamp": datetime.fromtimestamp(at, UTC).isoformat(),
                }
            )
            for expired, at in ((2, 1_700_000_100.95), (1, 1_700_000_101.5))
        )
    )
    found = timeouts_in_log(log, run)
    assert found is not None
    assert (found["expired"], found["expired_requests"]) == (3, 2)
    assert found["send_to_sweep_ms"]["p0"] == 950.0  # request 0 in the plug's sweep
    assert found["send_to_sweep_ms"]["p100"] == 1000.0  # request 1 in the next


def test_percentile_is_nearest_rank() -> None:
    """Nearest-rank percentiles of a sorted list; None for an empty one."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([], 50) is None
