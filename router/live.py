"""What the router learns from its own traffic: requests in flight per node and model, latency
(EWMA per model and node, and per model), and a circuit breaker per (model, node).

Implements the policy's ``Live`` view. Single-threaded (the router's event loop); the clock is
injected so tests drive time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from schemas.route import CircuitBreaker


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    probes: int = 0  # requests let through while half-open
    policy: CircuitBreaker | None = None  # the route's settings of the request that last failed here


class LiveStats:
    """In-flight counts, latency EWMAs and circuit breakers, updated by the request path."""

    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None = None,
        alpha: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.breaker = breaker or CircuitBreaker()
        self._alpha = alpha
        self._clock = clock
        self._node_in_flight: dict[str, int] = {}
        self._model_in_flight: dict[str, int] = {}
        self._pair_in_flight: dict[tuple[str, str], int] = {}  # (model, node)
        self._generated: dict[tuple[str, str], int] = {}  # tokens generated per (model, node), since the start
        self._model_slots: dict[str, int] = {}  # parallel slots of the nodes holding a model (from the table)
        self._node_limit: dict[str, int] = {}
        self._latency: dict[tuple[str, str], float] = {}
        self._model_latency: dict[str, float] = {}
        self._breakers: dict[tuple[str, str], _Breaker] = {}
        self.on_release: Callable[[str, str], None] | None = None  # (model, node): a slot was freed
    # -- the policy's view -------------------------------------------------------------------
    def in_flight(self, node: str) -> int:
        return self._node_in_flight.get(node, 0)

    def in_flight_by_node(self) -> dict[str, int]:
        """Requests in flight on each node that has any (the router's load report)."""
        return {node: n for node, n in self._node_in_flight.items() if n > 0}

    def in_flight_by_model(self) -> dict[str, dict[str, int]]:
        """Requests in flight per model and node (those with any): the autoscaler's signal."""
        out: dict[str, dict[str, int]] = {}
        for (model, node), n in self._pair_in_flight.items():
            if n > 0:
                out.setdefault(model, {})[node] = n
        return out

    def generated_by_model(self) -> dict[tuple[str, str], int]:
        """Tokens generated per (model, node) since the start (a reader takes rates from differences)."""
        return dict(self._generated)

    def latency_ms(self, model: str, node: str) -> float | None:
        return self._latency.get((model, node))

    def model_latency_ms(self, model: str) -> float | None:
        return self._model_latency.get(model)

    def model_load(self, model: str) -> float:
        return self._model_in_flight.get(model, 0) / max(1, self._model_slots.get(model, 1))

    def full(self, node: str) -> bool:
        limit = self._node_limit.get(node)
        return limit is not None and self.in_flight(node) >= limit

    def available(self, model: str, node: str) -> bool:
        if self.full(node):
            return False
        state = self.state(model, node)
        if state is BreakerState.HALF_OPEN:  # let a few probes through to see whether it recovered
            b = self._breakers[(model, node)]
            return b.probes < (b.policy or self.breaker).half_open_probes
        return state is BreakerState.CLOSED

    # -- capacity, from the route table ------------------------------------------------------
    def set_capacity(self, node_limits: dict[str, int], model_slots: dict[str, int]) -> None:
        """Concurrency limit per node and parallel slots per model (when the table changes)."""
        self._node_limit = dict(node_limits)
        self._model_slots = dict(model_slots)

    # -- circuit breaker ---------------------------------------------------------------------
    def state(self, model: str, node: str) -> BreakerState:
        b = self._breakers.get((model, node))
        if b is None or b.opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - b.opened_at < (b.policy or self.breaker).open_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    # -- the request path --------------------------------------------------------------------
    def started(self, model: str, node: str) -> None:
        self._node_in_flight[node] = self._node_in_flight.get(node, 0) + 1
        self._model_in_flight[model] = self._model_in_flight.get(model, 0) + 1
        self._pair_in_flight[(model, node)] = self._pair_in_flight.get((model, node), 0) + 1
        b = self._breakers.get((model, node))
        if b is not None and self.state(model, node) is BreakerState.HALF_OPEN:
            b.probes += 1

    def released(self, model: str, node: str) -> None:
        """A request ended without telling anything about the node (the client went away)."""
        self._node_in_flight[node] = max(0, self._node_in_flight.get(node, 0) - 1)
        self._model_in_flight[model] = max(0, self._model_in_flight.get(model, 0) - 1)
        self._pair_in_flight[(model, node)] = max(0, self._pair_in_flight.get((model, node), 0) - 1)
        if self.on_release is not None:
            self.on_release(model, node)

    def finished(
        self, model: str, node: str, *, ok: bool, latency_ms: float | None = None, policy: CircuitBreaker | None = None
    ) -> None:
        """Account for a request that ended: ``ok`` closes the breaker, failures may open it, by
        ``policy`` (the request's route's ``circuit_breaker``; the router's default without one)."""
        self.released(model, node)
        if ok:
            self._breakers.pop((model, node), None)
            if latency_ms is not None:
                self._observe(model, node, latency_ms)
            return
        b = self._breakers.setdefault((model, node), _Breaker())
        b.failures += 1
        half_open = self.state(model, node) is BreakerState.HALF_OPEN
        b.policy = policy or b.policy
        if half_open or b.failures >= (b.policy or self.breaker).consecutive_failures:
            b.opened_at, b.probes = self._clock(), 0  # (re)open: a failed probe waits a full period again

    def generated(self, model: str, node: str, tokens: int) -> None:
        """Tokens an answer of ``model`` on ``node`` generated."""
        if tokens > 0:
            self._generated[(model, node)] = self._generated.get((model, node), 0) + tokens

    def _observe(self, model: str, node: str, ms: float) -> None:
        a = self._alpha
        key = (model, node)
        old = self._latency.get(key)
        self._latency[key] = ms if old is None else (1 - a) * old + a * ms
        old_model = self._model_latency.get(model)
        self._model_latency[model] = ms if old_model is None else (1 - a) * old_model + a * ms

    def breakers(self) -> dict[tuple[str, str], BreakerState]:
        """Every (model, node) whose breaker is not closed (for /metrics)."""
        return {k: s for k in self._breakers if (s := self.state(*k)) is not BreakerState.CLOSED}
