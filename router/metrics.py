"""The router's Prometheus figures. Labels are route, model and node names from configuration and
registrations (bounded sets), never request values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from router.live import LiveStats

_FAST = (0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.005)
_OVERHEAD = (0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
             0.01, 0.025, 0.05, 0.1)  # fmt: skip
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


M = TypeVar("M", Counter, Histogram)


class Labelled(Generic[M]):
    """A labelled metric whose children are looked up once per label set: prometheus_client's
    ``labels()`` validates and locks on every call, ~15% of the router's CPU under load."""

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Labelled[Counter]:
            return Labelled(Counter(name, doc, labels, registry=registry))

        def histogram(name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> Labelled[Histogram]:
            return Labelled(Histogram(name, doc, labels, buckets=buckets, registry=registry))

        where = ["route", "model", "node"]
        self.decision = Histogram(
            "llmtune_router_decision_seconds", "Time to decide a request's route", buckets=_FAST, registry=registry
        )
        self.overhead = Histogram(
            "llmtune_router_overhead_seconds",
            "Time a whole (non-streamed) answer spent in the router itself: from the request read to the first upstream "
            "attempt, plus from the upstream's last byte to the reply written",
            buckets=_OVERHEAD,
            registry=registry,
        )
        self.requests = counter(
            "llmtune_router_requests", "Requests by outcome (variant: the experiment arm, if any)", [*where, "variant", "status"]
        )
        self.upstream = histogram("llmtune_router_upstream_seconds", "Upstream time until the answer ended", where, _SLOW)
        self.first_byte = histogram(
            "llmtune_router_first_byte_seconds", "Upstream time to the first byte (first token)", where, _SLOW
        )
        self.retries = counter("llmtune_router_retries", "Candidates that failed before one answered", ["route"])
        self.rejected = counter("llmtune_router_rejected", "Requests refused before any upstream", ["reason"])
        self.fallbacks = counter("llmtune_router_fallbacks", "Answers from a model other than the first choice", ["route"])
        self.quality_choices = counter(
            "llmtune_router_quality_choices",
            "Requests the quality strategy decided, by class, the model it put first and why (thompson, explore, only, floor)",
            ["route", "class", "model", "why"],
        )
        self.tokens = counter(
            "llmtune_tokens",
            "Tokens by direction (prompt, completion), tenant and model (the upstream's counts, else estimates)",
            ["direction", "tenant", "model"],
        )
        self.tokens_per_s = histogram(
            "llmtune_router_tokens_per_second",
            "Generation speed the node reported",
            where,
            (1, 5, 10, 20, 40, 80, 160, 320, 640, 1280),
        )


class BreakerStates(Collector):
    """Circuit breakers that are not closed, as ``llmtune_router_circuit_state{model,node,state} 1``."""

    def __init__(self, live: LiveStats) -> None:
        self._live = live

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "llmtune_router_circuit_state", "Open or half-open breakers", labels=["model", "node", "state"]
        )
        for (model, node), state in sorted(self._live.breakers().items()):
            family.add_metric([model, node, state.value], 1)
        yield family
