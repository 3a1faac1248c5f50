"""How many replicas a model wants: the autoscaler's formula, a pure function of the load seen,
the replicas ready, the policy and a clock passed in. Its windows and timers are a value
(``Windows``) the caller keeps in the store, so a new leader carries on where the last one was.

The shape follows Knative's KPA and Kubernetes' HPA, with what their users ran into designed out:
a stable window (~60 s) and a panic window (~6 s); panic when the short window asks for at least
twice the ready replicas, and nothing scales down while it lasts; a tolerance band; at most x2
per tick going up; going down, the largest recommendation over a stabilisation window that is
longer than the stable window (no thrash), one replica per step, and only when the replicas left
can take the load in flight; scale to zero only after a whole stable window without traffic; a
load that is unknown (routers' reports stale) is never a reason to scale down."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from schemas.status import RouterLoad

MAX_POINTS = 2_000  # a bound on each window's length, whatever the tick


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs, per model (defaults as the README gives them)."""

    per_replica: float  # requests in flight one replica should carry (its node's parallel slots)
    min_replicas: int = 0
    max_replicas: int = 1
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0  # the panic window asks for this many times the ready replicas
    tolerance: float = 0.1  # no change while the stable figure is within ±10% of the ready replicas
    max_scale_up_rate: float = 2.0  # at most x2 per tick
    scale_down_delay_s: float = 180.0  # the stabilisation window going down (longer than the stable window)

    def __post_init__(self) -> None:
        if self.per_replica <= 0 or not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("per_replica must be positive and 0 <= min_replicas <= max_replicas")
        if not 0 < self.panic_window_s <= self.stable_window_s <= self.scale_down_delay_s:
            raise ValueError("windows must grow: panic <= stable <= scale-down delay")


@dataclass(frozen=True, slots=True)
class Windows:
    """What the formula remembers between ticks (kept in the store by the loop)."""

    load: tuple[tuple[float, float], ...] = ()  # (time, requests in flight and queued), the stable window's
    wanted: tuple[tuple[float, int], ...] = ()  # (time, replicas recommended), the stabilisation window's
    known_since: float | None = None  # since when the load has been known without a gap
    last_traffic: float | None = None  # when the load was last above zero
    panic_until: float | None = None
    panic_peak: int = 0  # the most replicas asked for during this panic

    def to_json(self) -> dict[str, Any]:
        return {"load": [list(p) for p in self.load], "wanted": [list(p) for p in self.wanted],
                "known_since": self.known_since, "last_traffic": self.last_traffic,
                "panic_until": self.panic_until, "panic_peak": self.panic_peak}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Windows:
        return cls(
            load=tuple((float(t), float(v)) for t, v in data.get("load", ())),
            wanted=tuple((float(t), int(v)) for t, v in data.get("wanted", ())),
            known_since=data.get("known_since"),
            last_traffic=data.get("last_traffic"),
            panic_until=data.get("panic_until"),
            panic_peak=int(data.get("panic_peak") or 0),
        )


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The replicas wanted now, the windows to keep, and why (what a person reads in the audit log)."""

    desired: int
    windows: Windows
    reason: str
    panic: bool = False
    signals: dict[str, float] = field(default_factory=dict)


def recommend(policy: Policy, windows: Windows, *, now: float, load: float | None, ready: int) -> Recommendation:
    """The replicas a model wants at ``now``: ``load`` is the requests in flight and queued for it
    across the routers (None when their reports are stale: unknown), ``ready`` its ready replicas."""
    w = _observe(policy, windows, now=now, load=load)
    if not w.load:  # nothing known within the stable window: hold
        return _clamped(policy, max(ready, policy.min_replicas), w, "no load known: holding")
    stable = _mean(w.load, since=now - policy.stable_window_s)
    panic_load = _mean(w.load, since=now - policy.panic_window_s, default=stable)
    raw = stable / policy.per_replica
    want = ready if ready and abs(raw - ready) <= policy.tolerance * ready else math.ceil(raw)
    want_panic = math.ceil(panic_load / policy.per_replica)
    signals = {"stable": round(stable, 3), "panic": round(panic_load, 3), "per_replica": policy.per_replica}
    if want_panic >= max(policy.panic_threshold * ready, 1) and want_panic > ready:
        w = replace(w, panic_until=now + policy.stable_window_s)
    panicking = w.panic_until is not None and now < w.panic_until
    if panicking:
        want = max(ready, want_panic, w.panic_peak)
        w = replace(w, panic_peak=want)
        why = f"panic window {policy.panic_window_s:g} s: {panic_load:.1f} in flight / {policy.per_replica:g} per replica"
    else:
        w = replace(w, panic_until=None, panic_peak=0)
        why = f"stable window {policy.stable_window_s:g} s: {stable:.1f} in flight / {policy.per_replica:g} per replica"
    if load is not None:
        w = replace(w, wanted=_trim((*w.wanted, (now, want)), since=now - policy.scale_down_delay_s))
    desired, bound = want, ""
    if want > ready:
        cap = max(1, math.floor(ready * policy.max_scale_up_rate))
        if want > cap:
            desired, bound = cap, f"; going up at most x{policy.max_scale_up_rate:g} a tick"
    elif want < ready:
        desired, bound = _down(policy, w, now=now, load=load, ready=ready, stable=stable, panicking=panicking)
    out = _clamped(policy, desired, w, f"{why} → {want}{bound}")
    return replace(out, panic=panicking, signals=signals)


def _observe(policy: Policy, w: Windows, *, now: float, load: float | None) -> Windows:
    """The windows with this tick's load added (a gap in what is known restarts ``known_since``)."""
    if load is None:
        return replace(w, load=_trim(w.load, since=now - policy.stable_window_s), known_since=None)
    return replace(
        w,
        load=_trim((*w.load, (now, max(load, 0.0))), since=now - policy.stable_window_s),
        known_since=w.known_since if w.known_since is not None else now,
        last_traffic=now if load > 0 else w.last_traffic,
    )


def _down(
    policy: Policy, w: Windows, *, now: float, load: float | None, ready: int, stable: float, panicking: bool
) -> tuple[int, str]:  # fmt: skip
    """Going down: never in panic or while the load is unknown, never before a whole stabilisation
    window of known load, to the largest recommendation of that window, one replica a step, only
    when the replicas left can carry the load, and to zero only after a stable window of no traffic."""
    if panicking:
        return ready, "; no scaling down in panic"
    if load is None:
        return ready, "; load unknown: no scaling down"
    if w.known_since is None or now - w.known_since < policy.scale_down_delay_s:
        return ready, f"; scaling down waits for {policy.scale_down_delay_s:g} s of known load"
    target = max(v for _, v in w.wanted)
    if target >= ready:
        return ready, f"; the last {policy.scale_down_delay_s:g} s asked for {target}"
    step = max(target, ready - 1)
    if max(load, stable) > step * policy.per_replica:
        return ready, f"; {step} replica(s) could not carry {max(load, stable):.1f} in flight"
    if step == 0 and w.last_traffic is not None and now - w.last_traffic < policy.stable_window_s:
        return ready, f"; to zero only after {policy.stable_window_s:g} s without traffic"
    return step, "; one replica a step" if step > target else ""


def _clamped(policy: Policy, desired: int, w: Windows, reason: str) -> Recommendation:
    bounded = min(max(desired, policy.min_replicas), policy.max_replicas)
    if bounded != desired:
        side = "min_replicas" if bounded > desired else "max_replicas"
        reason += f"; held at {side} {bounded}"
    return Recommendation(bounded, w, reason)


def _mean(points: tuple[tuple[float, float], ...], *, since: float, default: float = 0.0) -> float:
    values = [v for t, v in points if t >= since]
    return sum(values) / len(values) if values else default


def _trim(points: tuple[Any, ...], *, since: float) -> tuple[Any, ...]:
    kept = tuple(p for p in points if p[0] >= since)
    return kept[-MAX_POINTS:]


def observed_load(reports: Iterable[RouterLoad], *, now: datetime, stale_after_s: float) -> dict[str, float] | None:
    """Requests in flight and queued per model, summed over the routers' reports; None (unknown)
    when there is no report or any live router's report is older than ``stale_after_s``: a part
    of the load would be missing, and a sum that is too low must never scale a model down."""
    out: dict[str, float] = {}
    reports = list(reports)
    if not reports:
        return None
    for report in reports:
        if report.updated_at is None or (now - report.updated_at).total_seconds() > stale_after_s:
            return None
        for model, load in report.models.items():
            out[model] = out.get(model, 0.0) + sum(load.in_flight.values()) + load.queued
    return out
