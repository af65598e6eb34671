"""The metrics module: label mapping, histograms, and the text it exposes (no gateway, no HTTP)."""

from __future__ import annotations

from time import perf_counter

import prometheus_client
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from manager_gateway.commands.registry import ALL_COMMANDS
from manager_gateway.protocol.errors import GatewayError
from manager_gateway.server.metrics import (
    DURATION_BUCKETS_S,
    STATUSES,
    Buckets,
    Metrics,
)
from tests.prometheus_text import Families, label_values, parse, sample

REQUESTS = "gateway_requests_total"
LATENCY = "gateway_request_duration_seconds"


def scrape(metrics: Metrics) -> Families:
    return parse(generate_latest(metrics.registry).decode())


def requests(families: Families, command: str, status: int) -> float:
    return sample(families, REQUESTS, "gateway_requests", command=command, status=str(status))


def latency_count(families: Families, command: str) -> float:
    return sample(families, f"{LATENCY}_count", LATENCY, command=command)


def test_value_on_a_bound_falls_in_that_bucket() -> None:
    """A value equal to a bound counts in that bound's bucket (Prometheus `le` is inclusive)."""
    histogram = Buckets((0.001, 0.01))
    histogram.observe(0.001)
    histogram.observe(0.005)
    histogram.observe(0.0)
    assert histogram.snapshot() == ([("0.001", 2), ("0.01", 3), ("+Inf", 3)], 0.006)


def test_value_above_every_bound_counts_only_in_inf() -> None:
    """A value past the last bound is counted in +Inf alone, and in the sum."""
    histogram = Buckets(DURATION_BUCKETS_S)
    histogram.observe(60.0)
    buckets, total = histogram.snapshot()
    assert [count for _, count in buckets] == [0] * len(DURATION_BUCKETS_S) + [1]
    assert total == 60.0


def test_duration_buckets_resolve_a_tenth_of_a_millisecond_to_ten_seconds() -> None:
    """The latency buckets span 0.1 ms to 10 s, increasing."""
    assert DURATION_BUCKETS_S[0] == 0.0001 and DURATION_BUCKETS_S[-1] == 10.0
    assert list(DURATION_BUCKETS_S) == sorted(set(DURATION_BUCKETS_S))


def test_every_answer_status_has_a_slot() -> None:
    """200 and the status of every error in the error tree can be counted."""
    classes, statuses = [GatewayError], {200}
    while classes:
        cls = classes.pop()
        statuses.add(cls.status)
        classes.extend(cls.__subclasses__())
    assert statuses == set(STATUSES)


def test_known_command_is_counted_under_its_name() -> None:
    """A command of the table is counted by its own name and status, with one latency sample."""
    metrics = Metrics()
    metrics.request("CreditInSync", 200, perf_counter())
    metrics.request("CreditInSync", 504, perf_counter())
    metrics.request("HealthCheck", 200, perf_counter())
    families = scrape(metrics)
    assert requests(families, "CreditInSync", 200) == 1
    assert requests(families, "CreditInSync", 504) == 1
    assert requests(families, "HealthCheck", 200) == 1
    assert latency_count(families, "CreditInSync") == 2
    assert latency_count(families, "HealthCheck") == 1
    assert label_values(families, "gateway_requests", "command") == {"CreditInSync", "HealthCheck"}


def test_unknown_commands_share_one_label() -> None:
    """Any number of names not in the command table make one `unknown` series, not one each."""
    metrics = Metrics()
    for n in range(200):
        metrics.request(f"NoSuchCommand{n}", 404, perf_counter())
    metrics.request("creditinsync", 404, perf_counter())  # names are case-sensitive
    families = scrape(metrics)
    assert requests(families, "unknown", 404) == 201
    assert latency_count(families, "unknown") == 201
    assert label_values(families, "gateway_requests", "command") == {"unknown"}
    assert label_values(families, LATENCY, "command") == {"unknown"}


def test_frame_without_envelope_is_labelled_invalid() -> None:
    """A frame answered without a command (invalid JSON, frame too large) counts as `invalid`."""
    metrics = Metrics()
    metrics.invalid_frame(400, perf_counter())
    metrics.invalid_frame(413, perf_counter())
    metrics.request("invalid", 404, perf_counter())  # a client's command named "invalid"
    families = scrape(metrics)
    assert requests(families, "invalid", 400) == 1
    assert requests(families, "invalid", 413) == 1
    assert requests(families, "unknown", 404) == 1


def test_latency_is_observed_from_the_start_time() -> None:
    """The latency sample is the time since `started`: at least the time that had passed."""
    metrics = Metrics()
    metrics.request("GetGroups", 200, perf_counter() - 0.003)
    families = scrape(metrics)
    bucket = f"{LATENCY}_bucket"
    assert sample(families, bucket, LATENCY, command="GetGroups", le="0.0025") == 0
    assert sample(families, bucket, LATENCY, command="GetGroups", le="+Inf") == 1
    assert sample(families, f"{LATENCY}_sum", LATENCY, command="GetGroups") >= 0.003


def test_batches_and_commit_failures() -> None:
    """batch_committed feeds the batch-size and commit-time histograms; failures count apart."""
    metrics = Metrics()
    metrics.batch_committed(1, 0.0004)
    metrics.batch_committed(100, 0.02)
    metrics.commit_failed()
    families = scrape(metrics)
    ops = "gateway_batch_operations"
    assert sample(families, f"{ops}_bucket", ops, le="1.0") == 1
    assert sample(families, f"{ops}_bucket", ops, le="64.0") == 1
    assert sample(families, f"{ops}_bucket", ops, le="128.0") == 2
    assert sample(families, f"{ops}_sum", ops) == 101
    commit = "gateway_batch_commit_seconds"
    assert sample(families, f"{commit}_bucket", commit, le="0.0005") == 1
    assert sample(families, f"{commit}_count", commit) == 2
    assert (
        sample(families, "gateway_ledger_commit_failures_total", "gateway_ledger_commit_failures")
        == 1
    )


def test_families_have_names_types_and_help() -> None:
    """Every family is gateway_* (or the process collector's process_*) and has help text."""
    text = generate_latest(Metrics().registry).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, family in families.items():
        assert name.startswith(("gateway_", "process_")), name
        assert family.documentation, name
    types = {name: family.type for name, family in families.items() if name.startswith("gateway_")}
    assert types == {
        "gateway_requests": "counter",
        "gateway_request_duration_seconds": "histogram",
        "gateway_connections_accepted": "counter",
        "gateway_connections_refused": "counter",
        "gateway_sessions": "gauge",
        "gateway_events_pushed": "counter",
        "gateway_batch_operations": "histogram",
        "gateway_batch_commit_seconds": "histogram",
        "gateway_settlement_requests": "counter",
        "gateway_settlement_cancels": "counter",
        "gateway_settlement_request_duration_seconds": "histogram",
        "gateway_ledger_commit_failures": "counter",
    }  # the gauges read from a gateway come with watch() (tests/e2e/test_metrics.py)


def test_sessions_and_events_are_always_exposed() -> None:
    """Every session type and both event channels have a series from the start, at zero."""
    families = scrape(Metrics())
    assert label_values(families, "gateway_sessions", "type") == {
        "user",
        "manager",
        "dealer",
        "admin",
        "system",
        "fix",
    }
    assert label_values(families, "gateway_events_pushed", "event") == {
        "trade:event",
        "balance:event",
    }


def test_each_metrics_has_its_own_registry() -> None:
    """Two gateways' metrics never mix, and nothing is put in prometheus_client's default one."""
    first, second = Metrics(), Metrics()
    first.request("GetGroups", 200, perf_counter())
    assert requests(scrape(first), "GetGroups", 200) == 1
    assert requests(scrape(second), "GetGroups", 200) == 0
    default = generate_latest(prometheus_client.REGISTRY).decode()
    assert "gateway_" not in default


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_every_command_has_its_own_label(command: str) -> None:
    """Each command of the table, HealthCheck included, is labelled with its own name."""
    metrics = Metrics()
    metrics.request(command, 200, perf_counter())
    assert requests(scrape(metrics), command, 200) == 1
