"""The fleet as agents report it: node registrations and statuses (lease-bound keys, fed by
informers), which nodes should hold each model, and desired versus actual per model and node."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from controlplane.store.informer import Snapshot
from controlplane.store.view import ConfigView, decode_keyed
from schemas.fleet import ModelOnNode, ModelsStatus, ModelStatus, NodeApplyState, NodeHealth, NodeList, NodeSummary, Scaling
from schemas.model import Model
from schemas.nodepool import NodePool
from schemas.placement import NodePlacement, ScalingRecord, placed_on
from schemas.status import ConditionType, ModelCondition, NodeRegistration, NodeStatus


class FleetView:
    """Registrations and statuses by node name; register ``on_nodes`` / ``on_status`` with informers."""

    def __init__(self) -> None:
        self.registrations: dict[str, NodeRegistration] = {}
        self.statuses: dict[str, NodeStatus] = {}
        self.scaling: dict[str, ScalingRecord] = {}  # the autoscaler's last decision per model
        self.placements: dict[str, NodePlacement] = {}  # the autoscaled models each node is given
        #: Bumped whenever a node's status changes, so waiters look again only at nodes that moved.
        self.status_versions: dict[str, int] = {}
        self._changed = asyncio.Event()

    def on_nodes(self, snapshot: Snapshot) -> None:
        self.registrations, _ = decode_keyed(snapshot, NodeRegistration, self.registrations)
        self._notify()

    def on_scaling(self, snapshot: Snapshot) -> None:
        self.scaling, _ = decode_keyed(snapshot, ScalingRecord, self.scaling)

    def on_placement(self, snapshot: Snapshot) -> None:
        self.placements, _ = decode_keyed(snapshot, NodePlacement, self.placements)
        self._notify()

    def on_status(self, snapshot: Snapshot) -> None:
        self.statuses, nodes = decode_keyed(snapshot, NodeStatus, self.statuses)
        for node in nodes:
            self.status_versions[node] = self.status_versions.get(node, 0) + 1
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """True once ``done()`` holds (checked after every fleet change); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while not done():
                    changed = self._changed
                    await changed.wait()
        except TimeoutError:
            return False
        return True

    def nodes_for(self, model: Model, pools: Mapping[str, NodePool]) -> list[str]:
        """Registered nodes that should hold ``model`` (an autoscaled one: where the autoscaler placed it)."""
        if model.spec.placement.autoscale:
            given = {n for n, p in self.placements.items() if model.name in p.models}
            return sorted(n for n, r in self.registrations.items() if n in given and placed_on(model, r.labels, pools))
        return sorted(n for n, r in self.registrations.items() if placed_on(model, r.labels, pools))


def model_on_node(node: str, status: NodeStatus | None, model: str, revision: int) -> NodeApplyState:
    """Whether ``node``'s status shows ``model`` at ``revision`` (or later) applied."""
    if status is None:
        return NodeApplyState(node=node, model=model, state="not-reporting",
                              message="no live status: the agent is down or its lease expired")  # fmt: skip
    cond = _condition(status, model)
    if not status.ollama_reachable:
        return NodeApplyState(node=status.node, model=model, state="unreachable", message="the agent cannot reach Ollama")
    if status.applied_revision >= revision or (
        cond is not None and cond.revision >= revision and cond.type is ConditionType.READY
    ):
        return NodeApplyState(node=status.node, model=model, state="applied")
    if cond is not None and cond.revision >= revision and cond.type is ConditionType.FAILED:
        return NodeApplyState(node=status.node, model=model, state="failed", message=f"{cond.reason}: {cond.message}")
    message = f"node at revision {status.applied_revision}, waiting for {revision}"
    return NodeApplyState(node=status.node, model=model, state="pending", message=message)


def _condition(status: NodeStatus, model: str) -> ModelCondition | None:
    return next((c for c in status.conditions if c.model == model), None)


def pools_in(view: ConfigView) -> dict[str, NodePool]:
    return {s.obj.name: s.obj for (kind, _), s in view.state.items() if kind == "nodepools" and isinstance(s.obj, NodePool)}


def node_summary(name: str, fleet: FleetView, *, revision: int, now: datetime | None = None) -> NodeSummary:
    reg, status = fleet.registrations.get(name), fleet.statuses.get(name)
    health: NodeHealth = "ready"
    if status is None:
        health = "not-reporting"
    elif not status.ollama_reachable:
        health = "ollama-unreachable"
    elif status.draining:
        health = "draining"
    elif any(c.type is ConditionType.FAILED for c in status.conditions):
        health = "degraded"
    out = NodeSummary(
        node=name,
        health=health,
        labels=reg.labels if reg else {},
        ollama_url=str(reg.ollama_url) if reg else None,
        capacity=reg.capacity if reg else None,
        agent_version=(reg.agent_version if reg else "") or (status.agent_version if status else ""),
    )
    if status is None:
        return out
    age = None
    if status.updated_at is not None:
        age = max(0.0, round(((now or datetime.now(UTC)) - status.updated_at).total_seconds(), 3))
    return out.model_copy(update={
        "applied_revision": status.applied_revision,
        "lag": max(0, revision - status.applied_revision),
        "ollama_version": status.ollama_version,
        "loaded_models": [m.name for m in status.loaded_models],
        "memory_used_bytes": sum(m.size_bytes for m in status.loaded_models),
        "vram_used_bytes": sum(m.size_vram_bytes for m in status.loaded_models),
        "draining": status.draining,
        "restart_required": status.restart_required,
        "last_errors": status.last_errors[-3:],
        "updated_at": status.updated_at,
        "heartbeat_age_s": age,
    })  # fmt: skip


def node_list(view: ConfigView, fleet: FleetView) -> NodeList:
    """Every node that is registered or reports status."""
    now = datetime.now(UTC)
    names = sorted(set(fleet.registrations) | set(fleet.statuses))
    return NodeList(revision=view.revision, generated_at=now,
                    nodes=[node_summary(n, fleet, revision=view.revision, now=now) for n in names])  # fmt: skip


def models_status(view: ConfigView, fleet: FleetView, *, model: str | None = None) -> ModelsStatus:
    """Per model: its desired tag and revision, and on each node that should hold it what is true."""
    pools = pools_in(view)
    models: list[ModelStatus] = []
    for (kind, name), stored in sorted(view.state.items()):
        if kind != "models" or not isinstance(stored.obj, Model) or (model is not None and name != model):
            continue
        tag = stored.obj.spec.ollama_tag
        full = tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"
        nodes = []
        for node in fleet.nodes_for(stored.obj, pools):
            status = fleet.statuses.get(node)
            cond = _condition(status, name) if status else None
            nodes.append(ModelOnNode(
                node=node,
                present=status is not None and full in status.available_models,
                loaded=status is not None and any(m.name == full for m in status.loaded_models),
                ready=cond is not None and cond.type is ConditionType.READY,
                applied=model_on_node(node, status, name, stored.revision).state == "applied",
                applied_revision=status.applied_revision if status else None,
                condition=cond,
            ))  # fmt: skip
        entry = ModelStatus(model=name, ollama_tag=full, revision=stored.revision, nodes=nodes,
                            ready_nodes=sum(1 for n in nodes if n.ready and n.applied), desired_nodes=len(nodes))  # fmt: skip
        if stored.obj.spec.placement.autoscale:
            record = fleet.scaling.get(name)
            desired = record.desired if record else stored.obj.spec.placement.min_replicas
            scaling = Scaling.model_validate(record.model_dump(exclude={"windows", "model"})) if record else None
            entry = entry.model_copy(update={"desired_nodes": desired, "autoscaled": True, "autoscale": scaling})
        models.append(entry)
    listed = node_list(view, fleet)
    return ModelsStatus(revision=listed.revision, generated_at=listed.generated_at, models=models, nodes=listed.nodes)
