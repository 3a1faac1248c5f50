"""The ``quality`` strategy's choice (pure, like the rest of the policy): the request's class, then
Thompson sampling on the quality posterior the monitor published for the route and that class,
with an exploration floor per model, a cost weight and the route's safety floor.

Each fitting model's quality is drawn as p x s (p from the Beta posterior of its success rate, s
from the Normal posterior of its mean score, clipped to [0, 1]) and divided by cost**cost_weight;
the highest wins. The draws are made when the table is built (128 per class and model, once per
publication); a request picks one of them per model (``getrandbits``). With probability
``explore`` x (models that fit) a uniformly drawn model is taken instead, so each gets at least
``explore`` of the class's traffic and a new or changed model is still tried. Models below the
floor come last (only a fallback reaches them)."""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from schemas.quality import Evidence, RouteQuality

#: Draws kept per arm (a power of two: one is picked per request by ``getrandbits``).
POOL_BITS = 7


def _pool(evidence: Evidence, seed: int) -> list[float]:
    """2**POOL_BITS draws of p x s from the posterior (numpy: ~10 µs for them all, against ~2.5 µs
    per draw for Python's betavariate and gauss, which made a decision ~60 µs slower at p99)."""
    import numpy as np  # only where a quality route has a posterior

    (alpha, beta), (mu, sd) = evidence.success_params(), evidence.score_params()
    rng = np.random.default_rng(seed & 0xFFFFFFFFFFFF)
    size = 1 << POOL_BITS
    draws = rng.beta(alpha, beta, size) * np.clip(rng.normal(mu, sd, size), 0.0, 1.0)
    return [float(x) for x in draws]


@dataclass(frozen=True, slots=True)
class Arm:
    """One model's posterior for one class, as draws ready to sample: Thompson sampling takes one
    of them per request (the posterior's draws are made when the table is built, every few seconds,
    not per request)."""

    draws: tuple[float, ...]
    excluded: bool = False

    @classmethod
    def of(cls, evidence: Evidence, *, excluded: bool = False, seed: int = 0) -> Arm:
        return cls(tuple(_pool(evidence, seed)), excluded)


_PRIOR_ARM: list[Arm] = []


def prior_arm() -> Arm:
    """The arm of a model without evidence for a class (uniform success rate, score around 0.5)."""
    if not _PRIOR_ARM:
        _PRIOR_ARM.append(Arm.of(Evidence(), seed=1))
    return _PRIOR_ARM[0]


Arms = Mapping[str, Mapping[str, Arm]]  # class -> model -> arm
_NONE: Mapping[str, Arm] = MappingProxyType({})
_BUILT: dict[int, tuple[RouteQuality, Arms]] = {}


def arms_of(published: RouteQuality | None) -> Arms:
    """The route's published posterior, indexed for the choice: built once per publication (the
    table is rebuilt on every fleet change; the same publication keeps its arms)."""
    if published is None:
        return MappingProxyType({})
    found = _BUILT.get(id(published))
    if found is not None and found[0] is published:
        return found[1]
    seed = itertools.count(zlib.crc32(published.route.encode()) + int(published.updated_at * 1000))
    arms: Arms = MappingProxyType({
        c.name: MappingProxyType({m.model: Arm.of(m.evidence, excluded=m.excluded, seed=next(seed)) for m in c.models})
        for c in published.classes
    })  # fmt: skip
    if len(_BUILT) >= 256:
        _BUILT.clear()
    _BUILT[id(published)] = (published, arms)
    return arms


class HasCost(Protocol):
    @property
    def cost(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Choice:
    """What the strategy saw and did: the class, why the first model won, the sampled scores."""

    cls: str
    why: str  # thompson | explore | only (one model fits) | floor (every fitting model is below it) | fallback (none fits)
    drawn: Sequence[tuple[float, str]] = ()  # (draw, model), highest first: read only once the request is answered

    @property
    def scores(self) -> dict[str, float]:
        return {name: round(q, 4) for q, name in self.drawn}

    def header(self) -> str:
        return ",".join(f"{name}={q:.3f}" for q, name in self.drawn)


def choose(
    cls: str, candidates: Sequence[str], arms: Arms, *, cost: Callable[[str], HasCost], explore: float, cost_weight: float,
    rng: random.Random,
) -> tuple[list[str], Choice]:  # fmt: skip
    """``candidates`` (the fitting models, in the route's order) in the order to try them."""
    known = arms.get(cls) or _NONE
    prior = _PRIOR_ARM[0] if _PRIOR_ARM else prior_arm()
    below = [n for n in candidates if (arm := known.get(n)) is not None and arm.excluded] if known else []
    above = [n for n in candidates if n not in below] if below else candidates
    pool, why = (above, "thompson") if above else (below, "floor")
    if len(pool) == 1:
        return [pool[0], *below] if above else list(below), Choice(cls, "only" if above else "floor")
    bits, get = POOL_BITS, rng.getrandbits
    drawn = [((known.get(n) or prior).draws[get(bits)], n) for n in pool]
    if cost_weight:
        drawn = [(q / max(cost(name).cost, 1e-3) ** cost_weight, name) for q, name in drawn]
    drawn.sort(reverse=True)
    ranked = [name for _, name in drawn]
    point = rng.random()
    if point < explore * len(pool):
        picked = pool[min(int(point / explore), len(pool) - 1)]
        ranked.remove(picked)
        ranked.insert(0, picked)
        why = "explore"
    if above and below:
        ranked += below
    return ranked, Choice(cls, why, drawn)
