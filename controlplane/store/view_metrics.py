"""Prometheus figures of a ConfigView, registered by every process that consumes configuration
(control plane, router, agent): ``llmtune_config_invalid_objects``, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controlplane.store.view import ConfigView


class InvalidObjectsCollector(Collector):
    """``llmtune_config_invalid_objects``: stored configuration items that do not validate (the
    process acts on their last good value, or without them when it has none)."""

    def __init__(self, view: ConfigView) -> None:
        self._view = view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "llmtune_config_invalid_objects",
            "Stored configuration objects that do not validate; this process keeps their last good value.",
        )
        family.add_metric([], len(self._view.invalid))
        yield family
