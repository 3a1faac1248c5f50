"""Prometheus metrics of the control plane: HTTP requests (plain ASGI middleware), informers, and
the fleet's nodes (health, configuration applied)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.services.fleet import FleetView, node_summary
from controlplane.store.informer import Informer
from controlplane.store.view import ConfigView
from schemas.model import Model


class MetricsMiddleware:
    """Request count and latency per route template (plain ASGI: BaseHTTPMiddleware costs ~1 ms a request)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("llmtune_api_requests_total", "API requests.", ["method", "route", "status"], registry=registry)
        self.latency = Histogram(
            "llmtune_api_request_duration_seconds",
            "API request latency.",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.latency.labels(scope["method"], path).observe(time.perf_counter() - start)
            self.requests.labels(scope["method"], path, str(status)).inc()


class InformerCollector(Collector):
    """Exposes each informer's revision and counters, read at scrape time (nothing on the hot path)."""

    def __init__(self, informers: dict[str, Informer]) -> None:
        self._informers = informers

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        return list(self._families())

    def _families(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        revision = GaugeMetricFamily("llmtune_informer_revision", "Revision the informer's snapshot is at.", labels=["informer"])
        objects = GaugeMetricFamily("llmtune_informer_objects", "Keys in the informer's snapshot.", labels=["informer"])
        lists = CounterMetricFamily("llmtune_informer_lists", "Full (re-)lists.", labels=["informer"])
        events = CounterMetricFamily("llmtune_informer_events", "Watch events applied.", labels=["informer"])
        ends = CounterMetricFamily(
            "llmtune_informer_stream_ends", "Watch sessions ended, by reason.", labels=["informer", "reason"]
        )
        for name, informer in self._informers.items():
            snapshot = informer.snapshot
            revision.add_metric([name], snapshot.revision)
            objects.add_metric([name], len(snapshot.items))
            lists.add_metric([name], informer.stats.lists)
            events.add_metric([name], informer.stats.events)
            for reason, count in informer.stats.ends.items():
                ends.add_metric([name, reason], count)
        yield from (revision, objects, lists, events, ends)


def install_informer_metrics(registry: CollectorRegistry, informers: dict[str, Informer]) -> None:
    registry.register(InformerCollector(informers))


class FleetCollector(Collector):
    """Each node's health and whether it runs the newest configuration, read at scrape time:
    ``llmtune_node_health{node,health} 1``, ``llmtune_node_config_behind{node}`` (1 while the
    node's applied revision is older than the newest configuration object's), and
    ``llmtune_config_revision`` (that newest revision)."""

    def __init__(self, view: ConfigView, fleet: FleetView) -> None:
        self._view, self._fleet = view, fleet

    def collect(self) -> Iterable[GaugeMetricFamily]:
        head = max((stored.revision for stored in self._view.state.values()), default=0)
        health = GaugeMetricFamily("llmtune_node_health", "1 for the node's current health.", labels=["node", "health"])
        behind = GaugeMetricFamily(
            "llmtune_node_config_behind", "1 while the node has not applied the newest configuration.", labels=["node"]
        )
        for name in sorted(set(self._fleet.registrations) | set(self._fleet.statuses)):
            summary = node_summary(name, self._fleet, revision=self._view.revision)
            health.add_metric([name, summary.health], 1)
            applied = summary.applied_revision
            behind.add_metric([name], 1 if applied is None or applied < head else 0)
        newest = GaugeMetricFamily("llmtune_config_revision", "Revision of the newest configuration object.")
        newest.add_metric([], head)
        replicas = GaugeMetricFamily(
            "llmtune_model_replicas", "An autoscaled model's replicas: desired, placed and ready.", labels=["model", "kind"]
        )
        bounds = GaugeMetricFamily("llmtune_model_max_replicas", "An autoscaled model's max_replicas.", labels=["model"])
        panic = GaugeMetricFamily("llmtune_model_scaling_panic", "1 while the autoscaler is in panic for the model.",
                                  labels=["model"])  # fmt: skip
        for name, record in sorted(self._fleet.scaling.items()):
            for kind in ("desired", "placed", "ready"):
                replicas.add_metric([name, kind], getattr(record, kind))
            stored = self._view.state.get(("models", name))
            if stored is not None and isinstance(stored.obj, Model):
                bounds.add_metric([name], stored.obj.spec.placement.max_replicas)
            panic.add_metric([name], 1 if record.panic else 0)
        return [health, behind, newest, replicas, bounds, panic]
