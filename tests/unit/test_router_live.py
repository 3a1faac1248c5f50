"""The router's live figures: in-flight counts, latency EWMAs, concurrency limits and the circuit
breaker's closed → open → half-open → closed cycle, on a hand-driven clock."""

from __future__ import annotations

from router.live import BreakerState, LiveStats
from schemas.route import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_again() -> None:
    clock = Clock()
    live = LiveStats(breaker=CircuitBreaker(consecutive_failures=3, open_s=10, half_open_probes=1), clock=clock)
    for _ in range(2):
        live.started("m", "n")
        live.finished("m", "n", ok=False)
    assert live.state("m", "n") is BreakerState.CLOSED and live.available("m", "n")
    live.started("m", "n")
    live.finished("m", "n", ok=False)
    assert live.state("m", "n") is BreakerState.OPEN and not live.available("m", "n")
    assert live.available("m", "other-node")  # per (model, node)

    clock.now += 10
    assert live.state("m", "n") is BreakerState.HALF_OPEN and live.available("m", "n")
    live.started("m", "n")  # the one probe
    assert not live.available("m", "n")  # no second probe while the first runs
    live.finished("m", "n", ok=False)  # the probe failed: open for a full period again
    assert live.state("m", "n") is BreakerState.OPEN
    clock.now += 10
    live.started("m", "n")
    live.finished("m", "n", ok=True, latency_ms=100)
    assert live.state("m", "n") is BreakerState.CLOSED and live.breakers() == {}


def test_in_flight_limits_and_latency() -> None:
    live = LiveStats(alpha=0.5)
    live.set_capacity({"n": 2}, {"m": 4})
    live.started("m", "n")
    assert live.available("m", "n") and live.in_flight("n") == 1 and live.model_load("m") == 0.25
    live.started("m", "n")
    assert not live.available("m", "n")  # at the node's limit
    live.finished("m", "n", ok=True, latency_ms=100)
    live.finished("m", "n", ok=True, latency_ms=300)
    assert live.available("m", "n") and live.in_flight("n") == 0
    assert live.latency_ms("m", "n") == 200 and live.model_latency_ms("m") == 200
    assert live.latency_ms("m", "other") is None


def test_a_client_going_away_only_releases_the_slot() -> None:
    live = LiveStats(breaker=CircuitBreaker(consecutive_failures=1))
    live.started("m", "n")
    live.released("m", "n")
    assert live.in_flight("n") == 0 and live.state("m", "n") is BreakerState.CLOSED and live.latency_ms("m", "n") is None


def test_a_routes_own_breaker_settings_apply() -> None:
    clock = Clock()
    live = LiveStats(clock=clock)  # the default: 5 failures, 30 s
    quick = CircuitBreaker(consecutive_failures=2, open_s=1, half_open_probes=1)
    for _ in range(2):
        live.started("m", "n")
        live.finished("m", "n", ok=False, policy=quick)
    assert live.state("m", "n") is BreakerState.OPEN and not live.available("m", "n")
    clock.now += 1.5
    assert live.state("m", "n") is BreakerState.HALF_OPEN and live.available("m", "n")
    for _ in range(4):  # without a route's settings, the default's five failures
        live.started("x", "n")
        live.finished("x", "n", ok=False)
    assert live.state("x", "n") is BreakerState.CLOSED
