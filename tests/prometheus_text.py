"""Reading Prometheus text exposition in tests, through prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

Families = dict[str, list[Sample]]


def parse(text: str) -> Families:
    """Every sample by family name (a counter's family name has no `_total`)."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def sample(families: Families, name: str, family: str | None = None, **labels: str) -> float:
    """The value of sample `name` with exactly `labels`; 0 when the series is absent (a series
    appears with its first count)."""
    for found in families.get(family or name, []):
        if found.name == name and found.labels == labels:
            return found.value
    return 0.0


def label_values(families: Families, family: str, label: str) -> set[str]:
    return {found.labels[label] for found in families.get(family, []) if label in found.labels}
