"""The autoscaler's formula (controlplane/services/replicas.py): table-driven cases for the
tolerance band, panic, clamps, rates and the max-over-window scale-down, and a property over
noisy oscillating load (no scale-down within the delay after a scale-up; few actions)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.services.replicas import Policy, Windows, observed_load, recommend
from schemas.status import ModelLoad, RouterLoad

P = Policy(per_replica=4, min_replicas=0, max_replicas=10)


def steady(
    policy: Policy, load: float, *, ready: int, seconds: float, tick: float = 2.0, start: float = 0.0
) -> tuple[Windows, float]:
    """Windows after ``seconds`` of a steady ``load`` with ``ready`` replicas (no action taken)."""
    w, now = Windows(), start
    while now < start + seconds:
        w = recommend(policy, w, now=now, load=load, ready=ready).windows
        now += tick
    return w, now


@pytest.mark.parametrize(
    ("load", "ready", "desired", "says"),
    [
        (16.0, 4, 4, "→ 4"),  # at target
        (17.0, 4, 4, "→ 4"),  # 4.25 replicas: within the ±10% band
        (18.0, 4, 5, "→ 5"),  # 4.5: outside it
        (40.0, 4, 8, "at most x2"),  # wants 10: x2 a tick
        (400.0, 6, 10, "held at max_replicas 10"),
        (4.0, 0, 1, "→ 1"),  # from zero
    ],
)
def test_going_up(load: float, ready: int, desired: int, says: str) -> None:
    w, now = steady(P, load, ready=ready, seconds=60)
    rec = recommend(P, w, now=now, load=load, ready=ready)
    assert rec.desired == desired and says in rec.reason, rec.reason


def test_min_replicas_holds_with_no_load_and_nothing_is_known_holds() -> None:
    policy = replace(P, min_replicas=2)
    w, now = steady(policy, 0.0, ready=2, seconds=400)
    assert recommend(policy, w, now=now, load=0.0, ready=2).desired == 2
    unknown = recommend(P, Windows(), now=0.0, load=None, ready=3)
    assert unknown.desired == 3 and "no load known" in unknown.reason


def test_panic_scales_up_fast_and_never_down_while_it_lasts() -> None:
    w, now = steady(P, 8.0, ready=2, seconds=60)  # 2 replicas at target
    rec = recommend(P, w, now=now, load=80.0, ready=2)  # a burst of 10x
    assert rec.panic and rec.desired == 4 and "panic window" in rec.reason
    rec = recommend(P, rec.windows, now=now + 2, load=80.0, ready=4)
    assert rec.panic and rec.desired == 8
    ready = rec.desired
    for t in range(4, 58, 2):  # the burst is gone: no scaling down until the panic ends
        rec = recommend(P, rec.windows, now=now + t, load=0.0, ready=ready)
        assert rec.desired >= ready and rec.panic, (t, rec.reason)
        ready = rec.desired
    assert ready == 10 and not recommend(P, rec.windows, now=now + 70, load=0.0, ready=ready).panic


def test_scaling_down_waits_for_the_window_then_one_replica_a_step() -> None:
    w, now = steady(P, 16.0, ready=4, seconds=200)  # 4 replicas wanted for a while
    rec, ready, downs = None, 4, []
    for t in range(2, 600, 2):  # then a quarter of the load
        rec = recommend(P, w if rec is None else rec.windows, now=now + t, load=4.0, ready=ready)
        if rec.desired < ready:
            downs.append((t, rec.desired))
        ready = rec.desired
    assert downs[0][0] >= P.scale_down_delay_s and [d for _, d in downs] == [3, 2, 1]  # one replica a step, down to the load
    assert rec is not None and "one replica a step" not in rec.reason


def test_not_down_while_load_is_unknown_or_the_rest_could_not_carry_it() -> None:
    w, now = steady(P, 4.0, ready=3, seconds=400)
    assert recommend(P, w, now=now, load=4.0, ready=3).desired == 2
    held = recommend(P, w, now=now, load=None, ready=3)
    assert held.desired == 3 and "unknown" in held.reason
    tight = replace(P, tolerance=0.0)
    w, now = steady(tight, 4.0, ready=3, seconds=400)
    burst = recommend(tight, w, now=now, load=9.0, ready=3)  # 2 replicas would carry 8
    assert burst.desired == 3, burst.reason


def test_a_new_leader_neither_forgets_nor_hurries() -> None:
    w, now = steady(P, 4.0, ready=3, seconds=400)
    kept = Windows.from_json(w.to_json())  # what the store gives the next leader
    assert recommend(P, kept, now=now, load=4.0, ready=3) == recommend(P, w, now=now, load=4.0, ready=3)
    amnesia = recommend(P, Windows(), now=now, load=4.0, ready=3)  # a leader without the windows
    assert amnesia.desired == 3 and "waits for 180 s" in amnesia.reason


def test_to_zero_only_after_a_stable_window_without_traffic() -> None:
    w, now = steady(P, 0.0, ready=1, seconds=400)
    assert recommend(P, w, now=now, load=0.0, ready=1).desired == 0
    w, now = steady(P, 0.0, ready=1, seconds=400)
    w = replace(w, last_traffic=now - 30)  # a request 30 s ago
    held = recommend(P, w, now=now, load=0.0, ready=1)
    assert held.desired == 1 and "without traffic" in held.reason


@settings(max_examples=60, deadline=None)
@given(
    period=st.integers(min_value=10, max_value=120),
    high=st.floats(min_value=4, max_value=40),
    noise=st.lists(st.floats(min_value=-2, max_value=2), min_size=300, max_size=300),
)
def test_oscillating_load_never_goes_down_within_the_delay_after_going_up(period: int, high: float, noise: list[float]) -> None:
    """A load that swings faster than the delay, with noise, replicas ready at once."""
    w, ready, actions = Windows(), 1, []
    for i, jitter in enumerate(noise):
        now = i * 2.0
        load = max(0.0, (high if (now // period) % 2 == 0 else 1.0) + jitter)
        rec = recommend(P, w, now=now, load=load, ready=ready)
        if rec.desired != ready:
            actions.append((now, "up" if rec.desired > ready else "down"))
        w, ready = rec.windows, rec.desired
    ups = [t for t, kind in actions if kind == "up"]
    for t, kind in actions:
        if kind == "down":
            assert not any(t - P.scale_down_delay_s < u < t for u in ups), actions
    # Not one change of direction per swing: a few runs per delay. A run is steps one way (the policy
    # steps down a replica per tick, so counting steps would count a staircase from 10 as 10 swings).
    runs = sum(1 for i, (_, kind) in enumerate(actions) if i == 0 or actions[i - 1][1] != kind)
    assert runs <= 2 + 600 / P.scale_down_delay_s * 2, actions


def test_the_load_is_the_routers_sum_or_unknown_when_one_is_stale() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    a = RouterLoad(router="a", models={"m": ModelLoad(in_flight={"n1": 2, "n2": 1}, queued=3)}, updated_at=now)
    b = RouterLoad(router="b", models={"m": ModelLoad(in_flight={"n1": 1}), "e": ModelLoad(queued=1)}, updated_at=now)
    assert observed_load([a, b], now=now, stale_after_s=10) == {"m": 7.0, "e": 1.0}
    old = b.model_copy(update={"updated_at": now - timedelta(seconds=11)})
    assert observed_load([a, old], now=now, stale_after_s=10) is None
    assert observed_load([], now=now, stale_after_s=10) is None  # no router reports: unknown, not "no load"
