"""Which nodes hold a model's replicas: a pure function from the replicas wanted, each model's
memory claim and each node's room to the models every node should hold.

Memory is booked by claim, from the placement itself (written before any load), so two
decisions never book the same bytes. Adding replicas goes largest claim first (a large model
still fits after the small ones) and picks, among the live nodes that match the model and have
the memory and a runner free, the best fit, preferring a node that already has the model on disk
and one with less in flight; a node holds at most one replica of a model (replicas spread).
Removing goes unhealthy nodes first, then replicas not loaded yet, then those partly offloaded
to CPU, then the idlest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

ON_DISK_BONUS = 0.25  # of a node's memory: worth that much worse a fit to skip the pull
LOAD_PENALTY = 0.02  # of a node's memory, per request in flight there


@dataclass(frozen=True, slots=True)
class NodeRoom:
    """One node as placement sees it."""

    name: str
    memory: int  # bytes models may use there (GPU memory, else RAM), the reserve already taken off
    max_loaded: int = 3  # runners it may keep (OLLAMA_MAX_LOADED_MODELS)
    held: frozenset[str] = frozenset()  # models placed on it now
    on_disk: frozenset[str] = frozenset()  # models whose blobs it has
    offloaded: frozenset[str] = frozenset()  # models it runs partly on CPU
    ready: frozenset[str] | None = None  # the held models it has loaded (None: all of them)
    in_flight: int = 0
    healthy: bool = True  # a fresh heartbeat past its grace, Ollama reachable, not draining
    loading: bool = False  # a model placed there is not loaded yet: no second load at once


@dataclass(frozen=True, slots=True)
class Plan:
    placement: dict[str, frozenset[str]]  # node -> the models it should hold (healthy nodes only)
    added: tuple[tuple[str, str], ...] = ()  # (model, node)
    removed: tuple[tuple[str, str], ...] = ()
    short: dict[str, str] = field(default_factory=dict)  # model -> why it has fewer replicas than wanted

    def replicas(self, model: str) -> int:
        return sum(model in held for held in self.placement.values())


def place(
    wanted: Mapping[str, int], claims: Mapping[str, int], nodes: Sequence[NodeRoom], *, eligible: Mapping[str, frozenset[str]]
) -> Plan:
    """The placement that gives each model in ``wanted`` its replicas where it can: ``claims`` in
    bytes per model, ``eligible`` the nodes each model may run on (selectors and pools)."""
    healthy = {n.name: n for n in nodes if n.healthy}
    held = {name: set(n.held) for name, n in healthy.items()}
    removed = [(m, n.name) for n in nodes if not n.healthy for m in sorted(n.held)]
    for model in sorted(wanted):  # too many: the worst replicas go first
        holders = [healthy[name] for name in sorted(held) if model in held[name]]
        extra = len(holders) - max(wanted[model], 0)
        for node in sorted(holders, key=lambda n: _keep(n, model))[: max(extra, 0)]:
            held[node.name].discard(model)
            removed.append((model, node.name))
    for name, models in held.items():  # models no longer wanted anywhere
        for model in sorted(models - set(wanted)):
            models.discard(model)
            removed.append((model, name))
    used = {name: sum(claims.get(m, 0) for m in models) for name, models in held.items()}
    loading = {name for name, n in healthy.items() if n.loading}  # at most one load in progress per node
    added: list[tuple[str, str]] = []
    short: dict[str, str] = {}
    for model in sorted(wanted, key=lambda m: (-claims.get(m, 0), m)):  # largest first
        need = wanted[model] - sum(model in models for models in held.values())
        claim = claims.get(model, 0)
        for _ in range(max(need, 0)):
            fits = [
                healthy[name] for name in sorted(eligible.get(model, frozenset()) & healthy.keys())
                if model not in held[name] and name not in loading and used[name] + claim <= healthy[name].memory
                and len(held[name]) < healthy[name].max_loaded
            ]  # fmt: skip
            if not fits:
                short[model] = _why_short(model, claim, healthy, held, used, eligible, loading)
                break
            best = max(fits, key=lambda n: (_score(n, model, claim, used[n.name]), n.name))
            held[best.name].add(model)
            used[best.name] += claim
            loading.add(best.name)
            added.append((model, best.name))
    placement = {name: frozenset(models) for name, models in held.items()}
    return Plan(placement, tuple(added), tuple(removed), short)


def _keep(node: NodeRoom, model: str) -> tuple[bool, bool, int, str]:
    """How much a replica is worth keeping (the least first): loaded, all on the GPU, busy."""
    return (node.ready is None or model in node.ready, model not in node.offloaded, node.in_flight, node.name)


def _score(node: NodeRoom, model: str, claim: int, used: int) -> float:
    """Higher is better: a tight fit, the blob on disk already, little in flight."""
    size = max(node.memory, 1)
    left = (node.memory - used - claim) / size
    return -left + (ON_DISK_BONUS if model in node.on_disk else 0.0) - LOAD_PENALTY * node.in_flight


def _why_short(
    model: str, claim: int, healthy: Mapping[str, NodeRoom], held: Mapping[str, set[str]], used: Mapping[str, int],
    eligible: Mapping[str, frozenset[str]], loading: set[str],
) -> str:  # fmt: skip
    names = eligible.get(model, frozenset()) & healthy.keys()
    if not names:
        return "no live node matches the model's selector and pool"
    free = [n for n in names if model not in held[n]]
    if not free:
        return f"every matching node ({len(names)}) holds a replica already"
    if all(n in loading for n in free):
        return "every matching node with room is loading a model already (one load at a time per node)"
    room = [n for n in free if len(held[n]) < healthy[n].max_loaded]
    if not room:
        return "every matching node runs as many models as it may (max_loaded_models)"
    most = max(healthy[n].memory - used[n] for n in room)
    return f"needs {claim / 1e9:.1f} GB; the most any matching node has free is {most / 1e9:.1f} GB"


class ClaimKey(NamedTuple):
    """What a loaded model's size depends on: its weights (digest), context and parallel slots
    (``num_ctx`` 0: the server's default, whatever it is: any context observed matches)."""

    digest: str
    num_ctx: int
    parallel: int


class Claims:
    """The memory to book per model: the size Ollama reported once it loaded somewhere with the
    same weights, context and slots, else the estimate (from its GGUF header) until then."""

    def __init__(self) -> None:
        self._observed: dict[ClaimKey, int] = {}

    def observe(self, key: ClaimKey, size_bytes: int) -> None:
        """A node reports the model loaded with this size (``/api/ps``); the largest seen is kept."""
        if size_bytes > 0:
            self._observed[key] = max(size_bytes, self._observed.get(key, 0))

    def claim(self, key: ClaimKey, *, estimate: int) -> int:
        if key in self._observed:
            return self._observed[key]
        whole = key._replace(num_ctx=key.num_ctx * key.parallel)  # Ollama versions that report the slots' context together
        if key.num_ctx and whole in self._observed:
            return self._observed[whole]
        if key.num_ctx == 0:  # loaded with the server's default context: any context it was seen with
            seen = [size for k, size in self._observed.items() if (k.digest, k.parallel) == (key.digest, key.parallel)]
            return max(seen) if seen else estimate
        return estimate
