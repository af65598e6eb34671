"""The shipped Grafana dashboard and Prometheus alert rules query metrics the gateway really
exposes: every metric name in their PromQL is checked against a scrape of a real gateway.

A renamed or misspelled metric does not fail in PromQL, it only draws an empty panel or an
alert that can never fire; this test is what notices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import GatewayFactory
from .test_metrics import metrics_gateway, scrape

CONFIG = Path(__file__).resolve().parents[2] / "config"
DASHBOARD = CONFIG / "grafana" / "manager-gateway.json"
ALERTS = CONFIG / "prometheus" / "alerts.yml"
LOGIN = 7002
#: Made by Prometheus itself for each scrape target, so it is never in the gateway's own scrape.
PROMETHEUS_MADE = {"up"}
MIN_DASHBOARD_METRICS = 10
ALERT_FIELDS = ("alert", "expr", "for", "labels", "annotations")

#: PromQL functions, aggregations, keywords and literals: identifiers that are not metric names.
PROMQL_WORDS = frozenset(
    {
        # aggregation operators and their modifiers
        *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"),
        *("bottomk", "topk", "quantile", "limitk", "limit_ratio", "by", "without"),
        # binary operators and vector matching
        *("and", "or", "unless", "atan2", "bool", "on", "ignoring", "group_left", "group_right"),
        # modifiers and literals
        *("offset", "start", "end", "inf", "nan"),
        # functions
        *("abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max"),
        *("clamp_min", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta"),
        *("deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction"),
        *("histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum"),
        *("holt_winters", "double_exponential_smoothing", "hour", "idelta", "increase"),
        *("irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month"),
        *("predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc"),
        *("sort_by_label", "sort_by_label_desc", "sqrt", "time", "timestamp", "vector", "year"),
        *("avg_over_time", "min_over_time", "max_over_time", "sum_over_time"),
        *("count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time"),
        *("last_over_time", "present_over_time", "mad_over_time"),
        *("acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh"),
        *("tan", "tanh", "deg", "rad", "pi"),
        # the bucket label: listed in case it is ever written outside by (...)
        "le",
    }
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")  # Grafana's $var, ${var}, [[var]]
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_RANGE = re.compile(r"\[[^\]]*\]")  # [5m], [$__rate_interval], subqueries [1h:5m]
# Not right after a word character, `:` or `.`, so the `m` of `offset 5m`, the `e3` of `1e3`
# and the tail of a longer identifier are not taken for names.
_IDENTIFIER = re.compile(r"(?<![\w:.])[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$|^\s*label_values\(\s*\w+\s*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: no functions, keywords, label names,
    strings, Grafana variables or durations."""
    for pattern in (_STRING, _VARIABLE, _MATCHERS, _GROUPING, _RANGE):
        expr = pattern.sub(" ", expr)
    return {word for word in _IDENTIFIER.findall(expr) if word.lower() not in PROMQL_WORDS}


def panel_exprs(panels: list[dict[str, Any]]) -> Iterator[str]:
    """Every target's `expr` of these panels and of the panels nested in (collapsed) rows."""
    for panel in panels:
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield target["expr"]
        yield from panel_exprs(panel.get("panels", []))


def variable_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    """The PromQL inside the dashboard's `label_values(...)` query variables."""
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        matched = _LABEL_VALUES.match(query)
        assert matched, f"variable {variable['name']}: not a label_values() query: {query}"
        if matched.group(1):
            yield matched.group(1)


def dashboard_names() -> dict[str, set[str]]:
    """Metric name -> the dashboard queries using it."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert 38 <= dashboard["schemaVersion"] <= 41
    exprs = [*panel_exprs(dashboard["panels"]), *variable_exprs(dashboard)]
    return names_in(exprs)


def alert_rules() -> list[dict[str, Any]]:
    rules_file = yaml.safe_load(ALERTS.read_text())
    return [rule for group in rules_file["groups"] for rule in group["rules"]]


def names_in(exprs: list[str]) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for expr in exprs:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(expr)
    return used


def test_metric_names_are_taken_from_promql_only() -> None:
    """Functions, keywords, label names, strings, variables and durations are not metric names."""
    assert metric_names(
        "histogram_quantile(0.99, sum by (command, le) (rate("
        'gateway_request_duration_seconds_bucket{job=~"$job", status!="200"}'
        "[$__rate_interval] offset 5m)))"
    ) == {"gateway_request_duration_seconds_bucket"}
    assert metric_names(
        "sum without (instance) (rate(a_total[5m])) / on (job) group_left (type) b:recorded"
    ) == {"a_total", "b:recorded"}
    assert metric_names(
        'label_replace(up{job="x"}, "dst", "$1", "src", "(.*)") == bool 0 unless absent(c)'
    ) == {"up", "c"}
    assert metric_names("max_over_time(d[1h:5m]) > 1e3 and clamp_min(e, 0) or vector(1)") == {
        "d",
        "e",
    }


def test_alert_rules_are_complete() -> None:
    """The alert rules parse as YAML and each has expr, for, severity, summary and description."""
    rules = alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        assert all(rule.get(field) for field in ALERT_FIELDS), rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        assert 'job="manager-gateway"' in rule["expr"], rule  # the job the README documents


@pytest.mark.skipif(
    not Path("/proc/self/stat").exists(),
    reason="prometheus_client exports the process_* metrics only from /proc",
)
async def test_dashboard_and_alerts_use_exposed_metrics(make_gateway: GatewayFactory) -> None:
    """Every metric the dashboard and the alert rules query is in a real gateway's scrape."""
    gw = await metrics_gateway(make_gateway)
    client = await gw.client()
    await gw.add_user(client, LOGIN)  # the labelled series appear with their first count
    await client.ok("CreditInSync", {"login": LOGIN, "amount": 50.0, "comment": "Deposit"})
    refused = await client.request("CreditIn", {"login": LOGIN, "amount": -1.0})
    assert refused["status"] == 400
    assert (await client.request("NoSuchCommand"))["status"] == 404
    families = await scrape(gw)
    # Sample names, with the suffixes PromQL selects: _total, _bucket, _count, _sum.
    exposed = {found.name for samples in families.values() for found in samples}

    dashboard = dashboard_names()
    alerts = names_in([rule["expr"] for rule in alert_rules()])
    assert len(dashboard.keys() - PROMETHEUS_MADE) >= MIN_DASHBOARD_METRICS, sorted(dashboard)
    assert alerts.keys() - PROMETHEUS_MADE, sorted(alerts)
    for source, used in ("dashboard", dashboard), ("alert rules", alerts):
        missing = {
            name: sorted(exprs)
            for name, exprs in used.items()
            if name not in exposed and name not in PROMETHEUS_MADE
        }
        assert not missing, f"{source} query metrics the gateway does not expose: {missing}"
