"""Routing policy: pure functions from a route table, a request's facts and live figures to an
ordered list of (model, node) candidates. The first is tried first; the rest are the fallback
chain. No I/O, no clock, no randomness of its own (the caller passes a uniform draw, and the random
source the quality strategy samples from).

Steps: match a route (priority order) → pick the primary target (experiment variant or weighted
split, sticky on a key; the ``quality`` strategy samples it, router/bandit.py) → order the other
targets by the route's strategy, then its fallbacks →
drop models that lack a required capability or cost too much, and (model, node) pairs whose
effective context (the num_ctx the request runs with, else the node's default) cannot hold the
prompt → for each model, its healthy nodes ordered by affinity (model loaded), load and latency.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from router.bandit import Choice, choose
from router.classify import Classifier, classify
from router.overrides import ClientView
from router.table import ModelEntry, NodeEntry, RouteEntry, RouteTable, tag_of
from schemas.model import Capability, Provider
from schemas.quality import class_key
from schemas.route import Strategy, Task

#: What a cold load costs in the score, in milliseconds of expected latency (loads take seconds).
COLD_LOAD_MS = 3_000.0
#: Latency assumed for a (model, node) never measured.
UNKNOWN_LATENCY_MS = 500.0
#: The capability a task needs, when it needs one.
TASK_CAPABILITY = {Task.CODE: Capability.CODE, Task.EMBEDDING: Capability.EMBED}


class NoRoute(Exception):
    """No model can serve the request; ``reasons`` say why (for a 404/503 a person can act on)."""

    def __init__(self, message: str, reasons: Sequence[str] = (), *, unknown_model: bool = False) -> None:
        super().__init__(message + (": " + "; ".join(reasons) if reasons else ""))
        self.reasons = list(reasons)
        self.unknown_model = unknown_model


class ContextTooLong(NoRoute):
    """Every candidate was left out because the prompt does not fit the context it runs with: the
    client's request is too long (a 400), not a fleet short of capacity."""

    def __init__(self, prompt: int, answer: int, largest: int, reasons: Sequence[str]) -> None:
        super().__init__(
            f"the prompt is ~{prompt} tokens and the answer may take {answer} more ({prompt + answer} in all), but the "
            f"largest context a candidate runs with is {largest}: shorten the prompt, lower num_predict / max_tokens, "
            "or route it to a model configured with a larger num_ctx",
            reasons,
        )
        self.tokens, self.largest = prompt + answer, largest


class AllBusy(NoRoute):
    """Every node that could serve the request is at its in-flight limit: it may wait for a slot of
    one of ``models`` (the admission queue), by the settings of ``route``."""

    def __init__(self, message: str, reasons: Sequence[str], *, models: Sequence[str], route: str | None) -> None:
        super().__init__(message, reasons)
        self.models = tuple(models)
        self.route = route


class Live(Protocol):
    """Figures the balancer keeps up to date (read-only here). Per-model aggregates keep the
    strategies O(1) per model: a model may sit on hundreds of nodes."""

    def in_flight(self, node: str) -> int: ...

    def latency_ms(self, model: str, node: str) -> float | None:
        """EWMA latency of ``model`` on ``node`` (None: never measured)."""
        ...

    def model_latency_ms(self, model: str) -> float | None:
        """EWMA latency of ``model`` over all its nodes."""
        ...

    def model_load(self, model: str) -> float:
        """In-flight requests of ``model`` per parallel slot of the nodes holding it."""
        ...

    def full(self, node: str) -> bool:
        """The node is at its in-flight limit."""
        ...

    def available(self, model: str, node: str) -> bool:
        """False while the circuit breaker for (model, node) is open or the node is at its limit."""
        ...


class NoLive:
    """Nothing measured yet."""

    def in_flight(self, node: str) -> int:
        return 0

    def latency_ms(self, model: str, node: str) -> float | None:
        return None

    def model_latency_ms(self, model: str) -> float | None:
        return None

    def model_load(self, model: str) -> float:
        return 0.0

    def full(self, node: str) -> bool:
        return False

    def available(self, model: str, node: str) -> bool:
        return True


_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Request:
    """What the policy needs to know about one request."""

    model: str | None = None  # the name the client asked for (an alias, a Model name or an Ollama tag)
    task: Task | None = None  # given (a hint, the front door, the native API); else read from ``text`` if needed
    text: str = ""  # what the classifier reads
    classifier: Classifier = classify
    tags: frozenset[str] = frozenset()
    tenant: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    capabilities: frozenset[Capability] = frozenset()
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    num_ctx: int | None = None  # the request's own options.num_ctx, if it sets one
    max_cost: float | None = None
    max_latency_ms: float | None = None  # leave out models observed to be slower
    sticky: str | None = None  # an explicit sticky key (native API)
    route: str | None = None  # a route named by the caller (the RAG engine's generation route): matching is skipped
    draw: float = 0.0  # uniform in [0, 1): the weighted split when no sticky key applies
    client: ClientView | None = None  # what the request sets that a model's client policy judges
    rng: random.Random = field(default=_RNG, repr=False, compare=False)  # what the quality strategy samples with
    _inferred: Task | None = field(default=None, init=False, repr=False, compare=False)

    def task_of(self) -> Task:
        """The given task, else the classifier's reading of ``text``: run at most once, and only
        when a route matches on tasks or ranks by context (most requests never pay for it)."""
        if self.task is not None:
            return self.task
        if self._inferred is None:
            object.__setattr__(self, "_inferred", self.classifier(self.text))
        return self._inferred  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Candidate:
    model: ModelEntry
    node: NodeEntry | None  # None: a static OpenAI-compatible endpoint

    @property
    def node_name(self) -> str:
        """The node's name, or ``endpoint`` for a static upstream (labels, headers, live figures)."""
        return self.node.name if self.node else "endpoint"


@dataclass(frozen=True, eq=False)
class Decision:
    """The choice, and the fallback chain behind it, computed only as far as it is walked (most
    requests never need a second candidate). Keeps the table it was made with, so a request in
    flight finishes on the configuration it started with."""

    route: str | None
    strategy: str
    variant: str | None
    first: Candidate
    reasons: tuple[str, ...]  # why models before the first were left out
    models: tuple[str, ...]  # every model name in the order to try
    table: RouteTable
    request: Request
    live: Live
    choice: Choice | None = None  # the quality strategy's class, sampled scores and why

    def candidates(self) -> Iterator[Candidate]:
        """The first candidate, its model's other nodes, then the next models' nodes (each that fits)."""
        yield self.first
        start = self.models.index(self.first.model.name)
        route = self.table.route(self.route)
        floor = _floor(route, self.variant, self.first.model, self.request)
        for node in _ranked_nodes(self.first.model, self.table, self.live, floor or 0):
            if node is not self.first.node:
                yield Candidate(self.first.model, node)
        for name in self.models[start + 1 :]:
            model = self.table.models.get(name)
            if model is None or _unfit(model, self.request, self.live) is not None:
                continue
            floor = _floor(route, self.variant, model, self.request)
            if floor is None:
                continue
            if model.provider is Provider.OPENAI:
                yield Candidate(model, None)
                continue
            for node in _ranked_nodes(model, self.table, self.live, floor):
                yield Candidate(model, node)


def matches(route: RouteEntry, req: Request) -> bool:
    m = route.spec.match
    return (
        (not m.model_aliases or req.model in m.model_aliases)
        and (not m.tasks or req.task_of() in m.tasks)
        and (not m.tags or bool(req.tags.intersection(m.tags)))
        and (not m.tenants or req.tenant in m.tenants)
        and all(req.headers.get(k.lower()) == v for k, v in m.headers.items())
    )


def sticky_value(key: str | None, req: Request) -> str | None:
    """The value a sticky key names: ``header:<name>``, ``tenant``, or the request's own key."""
    if key is None:
        return req.sticky
    if key.startswith("header:"):
        return req.headers.get(key[7:].lower())
    if key == "tenant":
        return req.tenant
    return req.sticky


def unit_hash(*parts: str) -> float:
    """A uniform number in [0, 1) from ``parts``: the same key always lands in the same bucket."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pick_weighted(names: Sequence[str], weights: Sequence[float], point: float) -> str:
    """The name whose share of the cumulative weights contains ``point`` (in [0, 1))."""
    total = sum(weights)
    edge = point * total
    for name, weight in zip(names, weights, strict=True):
        if edge < weight:
            return name
        edge -= weight
    return next(n for n, w in zip(reversed(names), reversed(weights), strict=True) if w > 0)


def _primary(route: RouteEntry, req: Request) -> tuple[str, str | None]:
    """The first model to try and the experiment variant, if any."""
    exp = route.experiment
    if exp is not None:
        key = sticky_value(exp.spec.sticky_key or route.spec.sticky_key, req)
        point = unit_hash(exp.name, key) if key is not None else req.draw
        name = pick_weighted(route.variants, route.variant_weights, point)
        return route.variant_models[route.variants.index(name)], name
    key = sticky_value(route.spec.sticky_key, req)
    point = unit_hash(route.name, key) if key is not None else req.draw
    return pick_weighted(route.targets, route.weights, point), None


def _unfit(model: ModelEntry, req: Request, live: Live | None = None) -> str | None:
    """Why ``model`` cannot serve ``req`` (None: it can)."""
    needed = set(req.capabilities)
    if req.task is Task.EMBEDDING:  # only ever given (by the embedding doors), never inferred
        needed.add(Capability.EMBED)
    missing = needed - model.capabilities
    if missing:
        return f"{model.name} lacks {', '.join(sorted(c.value for c in missing))}"
    if req.max_cost is not None and model.cost > req.max_cost:
        return f"{model.name} costs {model.cost}, above the request's max_cost {req.max_cost}"
    if req.max_latency_ms is not None and live is not None:
        observed = live.model_latency_ms(model.name)
        if observed is not None and observed > req.max_latency_ms:
            return f"{model.name} answers in ~{observed:.0f} ms, above the request's max_latency_ms {req.max_latency_ms:.0f}"
    return None


def run_ctx(route: RouteEntry | None, variant: str | None, model: ModelEntry, req: Request) -> int | None:
    """The num_ctx a request runs with on ``model``, as the options merge gives it (the request's,
    else the experiment variant's, the route target's, the model's); None: the node's default."""
    if req.num_ctx is not None:
        asked = req.num_ctx if req.client is None else req.client.let(model.name, model.client).options.get("num_ctx")
        if asked is not None:  # a client's num_ctx counts only where the model lets clients set it
            return int(asked)
    if route is not None:
        chosen = route.variant_options.get(variant) if variant else None
        if chosen is not None and chosen[0] == model.name and "num_ctx" in chosen[1]:
            return int(chosen[1]["num_ctx"])
        target = route.target_options.get(model.name)
        if target is not None and "num_ctx" in target:
            return int(target["num_ctx"])
    configured = model.options.get("num_ctx")
    return None if configured is None else int(configured)


def _fixed_ctx(model: ModelEntry, num_ctx: int | None) -> int | None:
    """The context ``model`` runs with wherever it runs (a static endpoint, or a num_ctx set);
    None: it depends on the node's default."""
    if model.provider is Provider.OPENAI:
        return model.context_window
    return None if num_ctx is None else min(num_ctx, model.context_window)


def _node_floor(model: ModelEntry, num_ctx: int | None, need: int) -> int | None:
    """None when ``need`` tokens cannot fit ``model`` anywhere; else the default context a node
    must have for them (0: the context does not depend on the node)."""
    fixed = _fixed_ctx(model, num_ctx)
    if fixed is not None:
        return 0 if need <= fixed else None
    return None if need > model.context_window else need


def _floor(route: RouteEntry | None, variant: str | None, model: ModelEntry, req: Request) -> int | None:
    """``_node_floor`` of ``model`` for ``req`` as the route and variant run it."""
    return _node_floor(model, run_ctx(route, variant, model, req), req.prompt_tokens + req.max_output_tokens)


def node_cost_ms(model: ModelEntry, node: NodeEntry, live: Live) -> float:
    """Expected latency on ``node``: observed (or assumed) latency, a cold load if the model is not
    in memory, and queueing once the node runs more requests than it serves in parallel."""
    name = node.name
    latency = live.latency_ms(model.name, name)
    cost = UNKNOWN_LATENCY_MS if latency is None else latency
    if model.tag not in node.loaded:
        cost += COLD_LOAD_MS
    busy = live.in_flight(name)
    if busy >= node.max_parallel:
        cost *= 1 + (busy - node.max_parallel + 1) / node.max_parallel
    return cost


def _model_key(strategy: Strategy, req: Request, live: Live) -> Callable[[ModelEntry], tuple[float, ...]]:
    """Sort key for a route's targets under ``strategy`` (lower sorts first)."""

    def latency(m: ModelEntry) -> float:
        ms = live.model_latency_ms(m.name)
        return UNKNOWN_LATENCY_MS if ms is None else ms

    fits_task = TASK_CAPABILITY.get(req.task_of()) if strategy is Strategy.CONTEXT_AWARE else None
    keys: dict[Strategy, Callable[[ModelEntry], tuple[float, ...]]] = {
        Strategy.BEST_QUALITY: lambda m: (-m.quality_tier, m.cost),
        Strategy.LOWEST_COST: lambda m: (m.cost, -m.quality_tier),
        Strategy.LOWEST_LATENCY: lambda m: (latency(m), m.cost),
        Strategy.LEAST_LOADED: lambda m: (live.model_load(m.name), latency(m)),
        # Context-aware: a model made for the task first, then the cheapest that fits, then quality.
        Strategy.CONTEXT_AWARE: lambda m: (
            float(fits_task is not None and fits_task not in m.capabilities),
            m.cost,
            -m.quality_tier,
        ),
    }
    return keys.get(strategy, lambda m: (0.0,))


def _quality(route: RouteEntry, req: Request, table: RouteTable, live: Live) -> tuple[list[str], Choice]:
    """The quality strategy's order: the fitting targets sampled for the request's class, then the
    targets that do not fit (their reasons are reported by ``_first``)."""
    spec = route.spec.quality
    task = req.task if req.task is not None else route.classifier(req.text) if route.classifier else req.task_of()
    cls = class_key(task.value, req.prompt_tokens, req.tenant if spec.by_tenant else None)
    models, need = table.models, req.prompt_tokens + req.max_output_tokens
    # Most requests set none of what ``_unfit`` and ``_floor`` weigh: then a model fits when the
    # prompt fits its window (what those two come to for them, in a quarter of the time).
    plain = (req.num_ctx is None and not req.capabilities and req.task is not Task.EMBEDDING and req.max_cost is None
             and req.max_latency_ms is None and not route.target_options)  # fmt: skip
    fitting = [
        n for n in route.targets if (m := models.get(n)) is not None and (
            need <= m.context_window if plain and "num_ctx" not in m.options
            else _unfit(m, req, live) is None and _floor(route, None, m, req) is not None
        )
    ]  # fmt: skip
    if not fitting:
        return list(route.by_weight), Choice(cls, "fallback")  # no target fits: the route's fallbacks serve
    order, choice = choose(cls, fitting, route.arms, cost=models.__getitem__, explore=spec.explore,
                           cost_weight=spec.cost_weight, rng=req.rng)  # fmt: skip
    if len(order) < len(route.targets):
        order += [n for n in route.by_weight if n not in order]
    return order, choice


def _ordered_models(
    route: RouteEntry, req: Request, table: RouteTable, live: Live
) -> tuple[list[str], str | None, Choice | None]:  # fmt: skip
    """Model names in the order to try them, the experiment variant and the quality strategy's choice."""
    spec = route.spec
    choice = None
    if route.experiment is None and spec.strategy is Strategy.QUALITY and spec.quality.enabled:
        (names, choice), variant = _quality(route, req, table, live), None
    elif route.experiment is not None or spec.strategy in (Strategy.WEIGHTED, Strategy.QUALITY):
        # The split (sticky or drawn) decides the first model; the other targets follow by weight.
        primary, variant = _primary(route, req)
        names = [primary, *(n for n in route.by_weight if n != primary)]
    else:
        # Every other strategy ranks all targets itself.
        variant, key = None, _model_key(spec.strategy, req, live)
        models = table.models
        names = [m.name for m in sorted((models[n] for n in route.targets if n in models), key=key)]
        names += [n for n in route.targets if n not in models]  # reported as not configured
    if spec.fallbacks:
        return list(dict.fromkeys([*names, *spec.fallbacks])), variant, choice
    return names, variant, choice


def _ranked_nodes(model: ModelEntry, table: RouteTable, live: Live, floor: int = 0) -> list[NodeEntry]:
    """Healthy, available nodes holding ``model`` whose default context is at least ``floor``,
    best first (affinity, load, latency)."""
    nodes = [n for n in table.nodes.get(model.name, ()) if n.default_ctx >= floor and live.available(model.name, n.name)]
    nodes.sort(key=lambda n: node_cost_ms(model, n, live))
    return nodes


def _first(
    names: Sequence[str], req: Request, table: RouteTable, live: Live, route: RouteEntry | None = None,
    variant: str | None = None,
) -> tuple[Candidate | None, list[str], int | None, list[str]]:  # fmt: skip
    """The first (model, node) that can serve ``req``, why the models before it could not, the
    largest context among them when the prompt's length was every reason (else None), and the
    models whose nodes were all at their in-flight limit."""
    reasons: list[str] = []
    need, largest, too_long = req.prompt_tokens + req.max_output_tokens, 0, True
    full: list[str] = []  # models whose nodes are all at their in-flight limit (worth waiting for)
    for name in names:
        model = table.models.get(name)
        if model is None:
            reasons.append(f"model {name} is not configured")
            too_long = False
            continue
        why = _unfit(model, req, live)
        if why is not None:
            reasons.append(why)
            too_long = False
            continue
        num_ctx = run_ctx(route, variant, model, req)
        floor = _node_floor(model, num_ctx, need)
        if floor is None:
            window = _fixed_ctx(model, num_ctx) or model.context_window
            source = "context window" if window == model.context_window else "num_ctx"
            reasons.append(f"{model.name}: ~{need} tokens exceed the {window} tokens it runs with ({source})")
            largest = max(largest, window)
            continue
        if model.provider is Provider.OPENAI:
            return Candidate(model, None), reasons, None, full
        # The best node only, not a ranking of all (that waits until a fallback needs it). Nodes
        # with the model loaded come first in the table; the others each cost a cold load on top,
        # so they are looked at only when every loaded one is at least that slow.
        held, warm = table.nodes.get(name, ()), table.warm.get(name, 0)
        best = _cheapest(model, held[:warm], live, floor)
        if best is None or best[1] > COLD_LOAD_MS:
            cold = _cheapest(model, held[warm:], live, floor)
            if cold is not None and (best is None or cold[1] < best[1]):
                best = cold
        if best is not None:
            return Candidate(model, best[0]), reasons, None, full
        if held and all(n.default_ctx < floor for n in held):
            window = min(max(n.default_ctx for n in held), model.context_window)
            reasons.append(
                f"{model.name}: ~{need} tokens exceed the default context of every node holding it (at most {window}; "
                "set num_ctx on the model, or OLLAMA_CONTEXT_LENGTH on its pool)"
            )
            largest = max(largest, window)
            continue
        if any(n.default_ctx >= floor and live.full(n.name) for n in held):
            full.append(name)
            reasons.append(f"every node of {name} that could serve it is at its in-flight limit")
        elif not held and model.autoscaled:  # scale from zero: it waits in the queue, which the autoscaler reads
            full.append(name)
            reasons.append(f"{name} has no replica yet: the autoscaler places one for the requests waiting")
        else:
            reasons.append(f"no healthy node holds {name}")
        too_long = False
    return None, reasons, (largest if too_long and largest else None), full


def _cheapest(model: ModelEntry, nodes: Sequence[NodeEntry], live: Live, floor: int = 0) -> tuple[NodeEntry, float] | None:
    """The available node of ``nodes`` (with a default context of at least ``floor``) with the
    lowest expected latency, and that latency."""
    best, best_ms = None, float("inf")
    for node in nodes:
        if node.default_ctx >= floor and live.available(model.name, node.name):
            ms = node_cost_ms(model, node, live)
            if ms < best_ms:
                best, best_ms = node, ms
    return None if best is None else (best, best_ms)


def _direct(req: Request, table: RouteTable) -> str | None:
    """A Model named by the request itself (its name or its Ollama tag), when no route matched."""
    if req.model is None:
        return None
    if req.model in table.models:
        return req.model
    return table.by_tag.get(tag_of(req.model))


def decide(table: RouteTable, req: Request, live: Live | None = None) -> Decision:
    """The first candidate (and the chain behind it); NoRoute when no model can serve the request."""
    live = live or NoLive()
    if req.route is not None:
        route = next((r for r in table.routes if r.name == req.route), None)
        if route is None:
            raise NoRoute(f"no route named '{req.route}'", unknown_model=True)
    else:
        route = next((r for r in table.routes_for(req.model, req.tenant) if matches(r, req)), None)
    if route is not None:
        names, variant, choice = _ordered_models(route, req, table, live)
        strategy, route_name = route.spec.strategy.value, route.name
        if route.spec.strategy is Strategy.QUALITY and choice is None:
            strategy = "weighted"  # the quality strategy is off (guardrail) or an experiment splits the route
    else:
        direct = _direct(req, table)
        if direct is None:
            asked = f"model '{req.model}'" if req.model else "this request"
            raise NoRoute(f"no route matches {asked} and no model has that name", unknown_model=True)
        names, variant, strategy, route_name, choice = [direct], None, "direct", None, None
    first, reasons, largest, full = _first(names, req, table, live, route, variant)
    if first is None:
        if largest is not None:
            raise ContextTooLong(req.prompt_tokens, req.max_output_tokens, largest, reasons)
        if full:
            raise AllBusy(f"every node that could serve this request is busy (route {route_name or '-'})", reasons,
                          models=full, route=route_name)  # fmt: skip
        raise NoRoute(f"no model can serve this request (route {route_name or '-'})", reasons)
    return Decision(route_name, strategy, variant, first, tuple(reasons), tuple(names), table, req, live, choice)


def merged_options(decision: Decision, model: ModelEntry) -> dict[str, Any]:
    """The options ``model`` runs a decided request with: its defaults (tuned) ← the route's target
    or experiment variant ← the request's options as the model's client policy lets them through;
    ``num_ctx`` clamped to the model's context window."""
    out = dict(model.options)
    route = decision.table.route(decision.route)
    if route is not None:
        out.update(route.target_options.get(model.name, {}))
        variant = route.variant_options.get(decision.variant) if decision.variant else None
        if variant is not None and variant[0] == model.name:
            out.update(variant[1])
    client = decision.request.client
    if client is not None:
        out.update(client.let(model.name, model.client).options)
    if "num_ctx" in out:
        out["num_ctx"] = min(int(out["num_ctx"]), model.context_window)
    return out
