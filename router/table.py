"""The router's immutable route table: models, routes, running experiments and the healthy nodes
that hold each model, built once per configuration or fleet revision (never per request).

Pure: it is built from decoded configuration objects and node status, so policy tests need no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from router.bandit import Arms, arms_of, prior_arm
from router.classify import Classifier as ClassifyFn
from router.overrides import DEFAULT_RULES, ClientRules
from schemas.classifier import Classifier
from schemas.common import ConfigObject
from schemas.experiment import Experiment, ExperimentState
from schemas.model import Capability, Model, Provider
from schemas.nodepool import NodePool
from schemas.placement import pools_of
from schemas.quality import RouteQuality
from schemas.route import Route, RouteSpec, Strategy
from schemas.status import NodeRegistration, NodeStatus


def tag_of(name: str) -> str:
    """Ollama's canonical name: ``:latest`` when no tag is given."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str  # the Model object's name
    tag: str  # what Ollama serves
    provider: Provider
    endpoint: str | None  # static OpenAI-compatible upstream
    capabilities: frozenset[Capability]
    context_window: int
    cost: float
    quality_tier: int
    options: Mapping[str, Any]  # tuned Ollama options (model defaults)
    keep_alive: str | int
    revision: int
    client: ClientRules = DEFAULT_RULES  # what requests may set (router/overrides.py)
    autoscaled: bool = False  # served only by the nodes the autoscaler placed it on


@dataclass(frozen=True, slots=True)
class NodeEntry:
    name: str
    url: str
    loaded: frozenset[str]  # tags loaded in memory (a request to them pays no load time)
    max_parallel: int
    limit: int  # requests the router keeps in flight on the node at most
    default_ctx: int = 2048  # the num_ctx the node runs a request with that sets none (see node_context)


#: Ollama's default context (its num_ctx when neither the request, the Modelfile nor
#: OLLAMA_CONTEXT_LENGTH sets one), by version: 2048 before 0.6.7, 4096 from 0.6.7, and from 0.15.5
#: one picked by the GPU memory (docs/context-length: below 24 GiB 4k, to 48 GiB 32k, above 256k).
#: An unknown version counts as the smallest, so that the fit check never counts on more than a node has.
OLLAMA_OLD_DEFAULT_CTX, OLLAMA_DEFAULT_CTX = 2048, 4096
OLLAMA_VRAM_CTX = ((24 * 2**30, 4096), (48 * 2**30, 32768), (None, 262144))


def _version(text: str | None) -> tuple[int, ...] | None:
    parts = (text or "").strip().lstrip("v").split("-")[0].split(".")
    return tuple(int(p) for p in parts) if len(parts) >= 2 and all(p.isdecimal() for p in parts) else None


def ollama_default_context(version: str | None, gpu_memory_bytes: int = 0) -> int:
    """The context Ollama ``version`` gives a request that sets no num_ctx (see above)."""
    parsed = _version(version)
    if parsed is None or parsed < (0, 6, 7):
        return OLLAMA_OLD_DEFAULT_CTX
    if parsed < (0, 15, 5):
        return OLLAMA_DEFAULT_CTX
    return next(ctx for below, ctx in OLLAMA_VRAM_CTX if below is None or gpu_memory_bytes < below)


def node_context(status: NodeStatus, reg: NodeRegistration) -> int:
    """A node's default num_ctx: its OLLAMA_CONTEXT_LENGTH when its agent knows it, else Ollama's default."""
    setting = status.server_settings.get("OLLAMA_CONTEXT_LENGTH", "")
    if setting.isdecimal() and int(setting) > 0:
        return int(setting)
    return ollama_default_context(status.ollama_version, reg.capacity.gpu_memory_bytes)


#: Without a pool's max_concurrency_per_node, a node takes this many times its parallel slots
#: (Ollama queues what it cannot run at once; beyond that, another node is the better bet).
DEFAULT_QUEUE_FACTOR = 4


@dataclass(frozen=True, slots=True)
class RouteEntry:
    name: str
    spec: RouteSpec
    experiment: Experiment | None  # only while it runs
    # Option overrides by target model and by experiment variant, as plain dicts once per table
    # (not dumped from pydantic on every request).
    target_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variant_options: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)  # variant -> (model, options)
    # The split's inputs, also once per table: target models and weights, the targets by weight
    # (the order after the drawn one), and the running experiment's variants, weights and models.
    targets: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    by_weight: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    variant_weights: tuple[float, ...] = ()
    variant_models: tuple[str, ...] = ()
    # The quality strategy's inputs: the published posterior by class and model, and the learned
    # classifier the route names (None: the request's classifier, the rules by default).
    arms: Arms = field(default_factory=dict)
    classifier: ClassifyFn | None = None


def _route_entry(
    route: Route, experiment: Experiment | None, published: RouteQuality | None = None, classifier: ClassifyFn | None = None
) -> RouteEntry:
    spec = route.spec
    targets = {t.model: t.options.model_dump(exclude_none=True) for t in spec.targets if t.options is not None}
    exp_variants = experiment.spec.variants if experiment else []
    variants = {v.name: (v.model, v.options.model_dump(exclude_none=True) if v.options else {}) for v in exp_variants}
    if spec.strategy is Strategy.QUALITY:
        prior_arm()  # drawn once, here: not on the first request (it imports numpy)
    return RouteEntry(
        route.name, spec, experiment, MappingProxyType(targets), MappingProxyType(variants),
        targets=tuple(t.model for t in spec.targets),
        weights=tuple(float(t.weight) for t in spec.targets),
        by_weight=tuple(t.model for t in sorted(spec.targets, key=lambda t: -t.weight)),
        variants=tuple(v.name for v in exp_variants),
        variant_weights=tuple(float(v.weight) for v in exp_variants),
        variant_models=tuple(v.model for v in exp_variants),
        arms=arms_of(published) if spec.strategy is Strategy.QUALITY else {},
        classifier=classifier,
    )  # fmt: skip


@dataclass(frozen=True)
class RouteTable:
    revision: int
    models: Mapping[str, ModelEntry]
    routes: tuple[RouteEntry, ...]  # highest priority first, then by name
    nodes: Mapping[str, tuple[NodeEntry, ...]]  # model name -> healthy nodes holding it, those with it loaded first
    warm: Mapping[str, int] = field(default_factory=dict)  # model name -> how many of its nodes have it loaded
    by_tag: Mapping[str, str] = field(default_factory=dict)  # Ollama tag -> model name
    # Routes that can match a request naming an alias / a tenant, and routes constrained by neither
    # (positions in ``routes``): matching looks at a handful of routes, not all of them.
    by_alias: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    by_tenant: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    open_routes: tuple[int, ...] = ()
    by_name: Mapping[str, RouteEntry] = field(default_factory=dict)
    held: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # node name -> models it holds

    def route(self, name: str | None) -> RouteEntry | None:
        """The route called ``name`` (None for a request no route matched)."""
        return self.by_name.get(name) if name is not None else None

    def routes_for(self, alias: str | None, tenant: str | None) -> Iterator[RouteEntry]:
        """Routes that may match, in priority order (each still has to pass its full match)."""
        positions = set(self.open_routes)
        if alias is not None:
            positions.update(self.by_alias.get(alias, ()))
        if tenant is not None:
            positions.update(self.by_tenant.get(tenant, ()))
        return (self.routes[i] for i in sorted(positions))


def _model_entry(model: Model) -> ModelEntry:
    spec = model.spec
    return ModelEntry(
        name=model.name,
        tag=tag_of(spec.ollama_tag),
        provider=spec.provider,
        endpoint=str(spec.endpoint) if spec.endpoint else None,
        capabilities=frozenset(spec.capabilities),
        context_window=spec.context_window,
        cost=spec.cost,
        quality_tier=spec.quality_tier,
        options=MappingProxyType(spec.options.model_dump(exclude_none=True)),
        keep_alive=spec.keep_alive,
        revision=model.metadata.revision or 0,
        client=ClientRules.of(spec),
        autoscaled=spec.placement.autoscale,
    )


def healthy(status: NodeStatus) -> bool:
    """A node takes new requests only when its agent reports Ollama reachable and it is not draining."""
    return status.ollama_reachable and not status.draining


def build_table(
    objects: Iterable[ConfigObject],
    registrations: Mapping[str, NodeRegistration],
    statuses: Mapping[str, NodeStatus],
    *,
    revision: int,
    placements: Mapping[str, frozenset[str]] | None = None,
    quality: Mapping[str, RouteQuality] | None = None,
) -> RouteTable:
    """The table for one configuration and fleet state. Nodes without live status are left out;
    an autoscaled model is held only where ``placements`` (node -> models) put it; ``quality``: the
    posterior the monitor published per route (routes with the ``quality`` strategy)."""
    placements, quality = placements or {}, quality or {}
    classifiers: dict[str, ClassifyFn] = {}
    models: dict[str, ModelEntry] = {}
    routes: list[Route] = []
    experiments: dict[str, Experiment] = {}
    pools: list[NodePool] = []
    for obj in objects:
        if isinstance(obj, NodePool):
            pools.append(obj)
        elif isinstance(obj, Model) and obj.spec.provider is not Provider.LOCAL:  # those run in the RAG engine
            models[obj.name] = _model_entry(obj)
        elif isinstance(obj, Route):
            routes.append(obj)
        elif isinstance(obj, Experiment) and obj.spec.state is ExperimentState.RUNNING:
            experiments[obj.name] = obj
        elif isinstance(obj, Classifier):
            from router import learned  # numpy: imported only when a classifier is configured

            learnt = learned.load(obj)
            if learnt is not None:
                classifiers[obj.name] = learnt
    # Ollama tags name models on nodes; a static endpoint's model is served there alone, even when
    # its upstream id reads like a tag some node holds.
    ollama = [m for m in models.values() if m.provider is not Provider.OPENAI]
    by_tag = {m.tag: m.name for m in sorted(ollama, key=lambda m: m.name, reverse=True)}
    holders: dict[str, list[NodeEntry]] = {}
    for name, status in sorted(statuses.items()):
        reg = registrations.get(name)
        if reg is None or not healthy(status):
            continue
        parallel = reg.capacity.max_parallel
        caps = [p.spec.max_concurrency_per_node for p in pools_of(reg.labels, pools) if p.spec.max_concurrency_per_node]
        limit = min(caps) if caps else parallel * DEFAULT_QUEUE_FACTOR
        loaded = frozenset(m.name for m in status.loaded_models)
        node = NodeEntry(name, str(reg.ollama_url).rstrip("/"), loaded, parallel, limit, node_context(status, reg))
        for tag in status.available_models:
            model = by_tag.get(tag_of(tag))
            if model is not None and (not models[model].autoscaled or model in placements.get(name, ())):
                holders.setdefault(model, []).append(node)
    warm: dict[str, int] = {}
    on_node: dict[str, list[str]] = {}
    for name, held in holders.items():
        for node in held:
            on_node.setdefault(node.name, []).append(name)
        tag = models[name].tag
        held.sort(key=lambda n: tag not in n.loaded)  # stable: by name within each group
        warm[name] = sum(tag in n.loaded for n in held)
    entries = tuple(
        _route_entry(r, experiments.get(r.spec.experiment) if r.spec.experiment else None, quality.get(r.name),
                     classifiers.get(r.spec.quality.classifier) if r.spec.quality.classifier else None)
        for r in sorted(routes, key=lambda r: (-r.spec.priority, r.name))
    )
    by_alias: dict[str, list[int]] = {}
    by_tenant: dict[str, list[int]] = {}
    open_routes: list[int] = []
    for i, entry in enumerate(entries):
        match = entry.spec.match
        if match.model_aliases:  # a request must name one of them
            for alias in match.model_aliases:
                by_alias.setdefault(alias, []).append(i)
        elif match.tenants:
            for tenant in match.tenants:
                by_tenant.setdefault(tenant, []).append(i)
        else:
            open_routes.append(i)
    return RouteTable(
        revision=revision,
        models=MappingProxyType(models),
        routes=entries,
        nodes=MappingProxyType({k: tuple(v) for k, v in holders.items()}),
        warm=MappingProxyType(warm),
        by_tag=MappingProxyType(by_tag),
        by_alias=MappingProxyType({k: tuple(v) for k, v in by_alias.items()}),
        by_tenant=MappingProxyType({k: tuple(v) for k, v in by_tenant.items()}),
        open_routes=tuple(open_routes),
        by_name=MappingProxyType({r.name: r for r in entries}),
        held=MappingProxyType({k: tuple(v) for k, v in on_node.items()}),
    )
