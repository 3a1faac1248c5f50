"""The autoscaler: every few seconds, for each Model with ``placement.autoscale``, the replicas it
wants (controlplane/services/replicas.py, from the routers' load reports) and the nodes that hold
them (controlplane/services/packing.py), written as ``/<ns>/v1/placement/<node>`` with each
model's record and windows (``/<ns>/v1/scaling/<model>``) in fenced transactions: only the leader
(election ``autoscaler``) writes, and a leader that lost its place writes nothing.

``decide`` is the pure part (the clock passed in); ``Autoscaler.tick`` reads the store, decides
and writes once; ``Autoscaler.run`` only campaigns and reconnects."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from controlplane.services.errors import HistoryUnavailable
from controlplane.services.history import LEGACY, Change, History
from controlplane.services.loops import lead
from controlplane.services.packing import ClaimKey, Claims, NodeRoom, place
from controlplane.services.replicas import Policy, Windows, observed_load, recommend
from controlplane.store import epoch as epochs
from controlplane.store.base import ConfigStore, Delete, Op, Put
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from controlplane.store.view import ConfigView
from schemas.model import Model, Provider
from schemas.nodepool import NodePool, parallel_slots
from schemas.placement import NodePlacement, ScalingRecord, placed_on
from schemas.status import LoadedModel, NodeRegistration, NodeStatus, RouterLoad

log = logging.getLogger(__name__)
DEFAULT_SLOTS = 4
RESERVE = 0.10  # of a node's memory, never booked
STALE_S = 10.0  # a router report older than this makes the load unknown
UNBOUNDED = 1 << 62  # the memory of a node that reports none
MAX_OPS = 100  # per transaction (etcd allows 128 by default)
PERSIST_S = 10.0  # an unchanged record (only its windows moved) is written this often
MAX_UNAUDITED = 1000  # decisions kept while the audit log's database is down (the oldest dropped past it)
ACTOR = "autoscaler"
SCALING = "scaling"  # the audit log's kind for its decisions


@dataclass(frozen=True, slots=True)
class Fleet:
    """What one tick reads."""

    models: Sequence[Model]
    pools: Mapping[str, NodePool]
    registrations: Mapping[str, NodeRegistration]
    statuses: Mapping[str, NodeStatus]
    reports: Sequence[RouterLoad]
    records: Mapping[str, ScalingRecord]
    placements: Mapping[str, NodePlacement]
    down_since: Mapping[str, float] = field(default_factory=dict)  # node -> when it was first seen down (wall clock)


@dataclass(frozen=True, slots=True)
class Timing:
    """The formula's windows and how old a router report may be (the autoscaler settings)."""

    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    scale_down_delay_s: float = 180.0
    stale_after_s: float = STALE_S
    node_grace_s: float = 30.0  # a node down this long loses its replicas (a flap keeps them)
    evictions_per_tick: int = 1  # nodes whose replicas move elsewhere in one tick


@dataclass(frozen=True, slots=True)
class Decision:
    placements: dict[str, NodePlacement]  # every registered node's autoscaled models
    records: dict[str, ScalingRecord]


def _tag(model: Model) -> str:
    tag = model.spec.ollama_tag
    return tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"


def decide(fleet: Fleet, *, now: float, timing: Timing = Timing()) -> Decision:
    """Replicas and placement for every autoscaled model at ``now`` (wall-clock seconds)."""
    wall = datetime.fromtimestamp(now, UTC)
    auto = [m for m in fleet.models if m.spec.provider is Provider.OLLAMA and m.spec.placement.autoscale]
    fixed = [m for m in fleet.models if m.spec.provider is Provider.OLLAMA and not m.spec.placement.autoscale]
    names = {m.name for m in auto}
    sizes = _observed_sizes(fleet.statuses)
    eligible = {m.name: frozenset(n for n, r in fleet.registrations.items() if placed_on(m, r.labels, fleet.pools)) for m in auto}
    observed = _observed_claims(fleet.statuses, fleet.registrations)
    claims = {m.name: _claim(m, observed, sizes, fleet, eligible[m.name]) for m in auto}
    serving = _in_flight_by_node_and_model(fleet.reports)
    in_flight: dict[str, int] = {}
    for (node, _model), n in serving.items():
        in_flight[node] = in_flight.get(node, 0) + n
    evict = _evictions(fleet, now=now, timing=timing)
    rooms, ready = [], dict.fromkeys(names, 0)
    restarting: dict[str, list[str]] = {m: [] for m in names}  # model -> nodes that hold it and wait to restart
    for name, reg in sorted(fleet.registrations.items()):
        status = fleet.statuses.get(name)
        loaded = {lm.name: lm for lm in status.loaded_models} if status else {}
        placed = fleet.placements.get(name)
        held = (set(placed.models) if placed else {m.name for m in auto if _tag(m) in loaded}) & names  # adopt what runs
        for model in auto:
            if model.name in held and _tag(model) in loaded and not down(status):  # a draining node's list is stale
                ready[model.name] += 1
            if model.name in held and status is not None and status.restart_pending:
                restarting[model.name].append(name)
        # the runners and memory the node's other models take now: a model every node may hold counts only while it
        # serves a request there (idle, Ollama evicts it for the replica, and the agent warms replicas first)
        others = [m for m in fixed if _tag(m) in loaded and serving.get((name, m.name), 0) > 0]
        total = reg.capacity.gpu_memory_bytes or reg.capacity.memory_bytes
        memory = int(total * (1 - RESERVE)) - sum(sizes.get(_tag(m), 0) for m in others) if total else UNBOUNDED
        rooms.append(NodeRoom(
            name, max(memory, 0), max_loaded=max(reg.capacity.max_loaded_models - len(others), 0), held=frozenset(held),
            on_disk=frozenset(m.name for m in auto if status and _tag(m) in status.available_models),
            offloaded=frozenset(m.name for m in auto if _tag(m) in loaded and _partly_on_cpu(loaded[_tag(m)])),
            ready=frozenset(m.name for m in auto if m.name in held and _tag(m) in loaded),
            in_flight=in_flight.get(name, 0),
            # a node down within its grace keeps its replicas but takes no new one (as if loading)
            loading=name in fleet.down_since or any(_tag(m) not in loaded for m in auto if m.name in held)
            or bool(status and status.restart_pending),  # about to restart: it keeps what it has, takes nothing new
            healthy=name not in evict,
        ))  # fmt: skip
    for name, gone in sorted(fleet.placements.items()):  # its agent is gone (registration expired): down, with a grace
        if name not in fleet.registrations and set(gone.models) & names:
            rooms.append(NodeRoom(name, 0, held=frozenset(gone.models) & names, loading=True, healthy=name not in evict))
    load = observed_load(fleet.reports, now=wall, stale_after_s=timing.stale_after_s)
    wanted, recs = {}, {}
    for model in auto:
        spec = model.spec.placement
        slots = [fleet.registrations[n].capacity.max_parallel for n in eligible[model.name]]
        policy = Policy(per_replica=sum(slots) / len(slots) if slots else DEFAULT_SLOTS, min_replicas=spec.min_replicas,
                        max_replicas=spec.max_replicas, stable_window_s=timing.stable_window_s,
                        panic_window_s=timing.panic_window_s, scale_down_delay_s=timing.scale_down_delay_s)  # fmt: skip
        record = fleet.records.get(model.name)
        windows = Windows.from_json(record.windows) if record else Windows()
        seen = None if load is None else load.get(model.name, 0.0)
        rec = recommend(policy, windows, now=now, load=seen, ready=ready[model.name])
        # a node about to restart keeps its replica until one more is ready elsewhere (a surge, as a rolling update)
        surge = restarting[model.name] if rec.desired else []
        wanted[model.name] = rec.desired + len(surge)
        if surge:
            rec = replace(rec, reason=f"{rec.reason}; +{len(surge)} while {', '.join(surge)} restart(s)")
        recs[model.name] = (rec, record)
    plan = place(wanted, claims, rooms, eligible=eligible)
    records = {}
    for model in auto:
        rec, before = recs[model.name]
        count = plan.replicas(model.name)
        if before is None or before.desired != rec.desired:
            log.info("autoscaler: %s wants %d replica(s) (was %s): %s", model.name, rec.desired,
                     before.desired if before else "-", rec.reason)  # fmt: skip
        records[model.name] = ScalingRecord(
            model=model.name, desired=rec.desired, ready=ready[model.name], placed=count, reason=rec.reason[:2000],
            panic=rec.panic, short=plan.short.get(model.name, "")[:500], restarting=restarting[model.name],
            windows=rec.windows.to_json(), updated_at=wall,
        )  # fmt: skip
    placements = {
        node: NodePlacement(node=node, models=sorted(models), updated_at=wall) for node, models in plan.placement.items()
    }
    return Decision(placements, records)


def changes_of(fleet: Fleet, decision: Decision) -> list[Change]:
    """The decisions of a tick worth an audit row: a model's desired replicas or its nodes changed
    (kind ``scaling``; before/after: desired, nodes, and the reason)."""

    def nodes(placements: Mapping[str, NodePlacement], model: str) -> list[str]:
        return sorted(node for node, p in placements.items() if model in p.models)

    out = []
    for name, after in sorted(decision.records.items()):
        before, now_on, was_on = fleet.records.get(name), nodes(decision.placements, name), nodes(fleet.placements, name)
        if before is not None and before.desired == after.desired and now_on == was_on:
            continue
        old = {"desired": before.desired, "nodes": was_on} if before is not None else None
        new = {"desired": after.desired, "nodes": now_on, "reason": after.reason}
        if after.short:
            new["short"] = after.short
        out.append(Change(SCALING, name, "update" if old else "create", old, new))
    for name in sorted(set(fleet.records) - set(decision.records)):  # autoscale turned off, or the Model deleted
        before = fleet.records[name]
        out.append(Change(SCALING, name, "delete", {"desired": before.desired, "nodes": nodes(fleet.placements, name)}, None))
    return out


def down(status: NodeStatus | None) -> bool:
    """A node that cannot serve: no live status, Ollama unreachable, or draining."""
    return status is None or not status.ollama_reachable or status.draining


def _evictions(fleet: Fleet, *, now: float, timing: Timing) -> set[str]:
    """The nodes whose replicas go elsewhere now: down past their grace, a few per tick (a fleet
    that loses many nodes at once is more likely a partition than dead nodes)."""
    due = sorted(n for n, since in fleet.down_since.items() if now - since >= timing.node_grace_s)
    return set(due[: timing.evictions_per_tick])


def _partly_on_cpu(loaded: LoadedModel) -> bool:
    return loaded.size_vram_bytes < loaded.size_bytes


def _observed_sizes(statuses: Mapping[str, NodeStatus]) -> dict[str, int]:
    """The largest size Ollama reported for each tag loaded anywhere."""
    out: dict[str, int] = {}
    for status in statuses.values():
        for lm in status.loaded_models:
            out[lm.name] = max(out.get(lm.name, 0), lm.size_bytes)
    return out


def _parallel(status: NodeStatus | None, reg: NodeRegistration | None) -> int:
    """A node's parallel slots: what its Ollama runs with, else what its agent registered."""
    registered = reg.capacity.max_parallel if reg is not None else DEFAULT_SLOTS
    return parallel_slots(status.server_settings, registered) if status is not None else registered


def _observed_claims(statuses: Mapping[str, NodeStatus], regs: Mapping[str, NodeRegistration]) -> Claims:
    """The sizes Ollama reported for the models loaded anywhere, by weights, context and slots."""
    claims = Claims()
    for node, status in statuses.items():
        parallel = _parallel(status, regs.get(node))
        for lm in status.loaded_models:
            if lm.digest:
                claims.observe(ClaimKey(lm.digest, lm.context_length, parallel), lm.size_bytes)
    return claims


def _claim(model: Model, observed: Claims, sizes: Mapping[str, int], fleet: Fleet, nodes: frozenset[str]) -> int:
    """Bytes to book. Where a node that may hold it has it on disk (its agent's estimate names the
    weights, context and slots): the size Ollama reported for the same loaded anywhere, else the
    Model's ``memory_bytes``, else the agents' estimate (the GGUF header, or the size on disk and a
    margin); the largest over those nodes. Otherwise: the size reported for its tag, else
    ``memory_bytes``, else a fair share of the smallest matching node (its memory over its runners)."""
    tag, given = _tag(model), model.spec.placement.memory_bytes
    estimates = [e for n in nodes if (st := fleet.statuses.get(n)) is not None and (e := st.estimates.get(tag)) is not None]
    if estimates:
        return max(observed.claim(ClaimKey(e.digest, e.num_ctx, e.parallel), estimate=given or e.bytes) for e in estimates)
    if sizes.get(tag):
        return sizes[tag]
    if given is not None:
        return given
    shares = [
        int((r.capacity.gpu_memory_bytes or r.capacity.memory_bytes) * (1 - RESERVE)) // max(r.capacity.max_loaded_models, 1)
        for n in nodes if (r := fleet.registrations[n]).capacity.gpu_memory_bytes or r.capacity.memory_bytes
    ]  # fmt: skip
    return min(shares) if shares else 0


def _in_flight_by_node_and_model(reports: Sequence[RouterLoad]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for report in reports:
        for model, load in report.models.items():
            for node, n in load.in_flight.items():
                out[(node, model)] = out.get((node, model), 0) + n
    return out


class Nodes(Protocol):
    """Where the nodes' registrations and statuses are kept current (the control plane's FleetView)."""

    registrations: dict[str, NodeRegistration]
    statuses: dict[str, NodeStatus]


class Autoscaler:
    """The loop around ``decide``, over the control plane's informed views."""

    def __init__(
        self, store: ConfigStore, keys: KeySpace, *, view: ConfigView, fleet: Nodes, every_s: float = 3.0,
        timing: Timing = Timing(), history: History | None = None, synced: Callable[[], Awaitable[object]] | None = None,
    ) -> None:  # fmt: skip
        """``fleet``: the registrations and statuses the control plane's informers keep (read each tick);
        ``history``: the audit log the decisions go to; ``synced``: returns once those informers and the
        configuration's have listed the store (before it, every node would look gone)."""
        self._store, self._keys, self._view, self._fleet = store, keys, view, fleet
        self.every_s, self.timing = every_s, timing
        self.last: Decision | None = None
        self._history, self._synced = history, synced
        self._unaudited: deque[tuple[int, Change]] = deque(maxlen=MAX_UNAUDITED)  # (revision, decision)
        self.down_since: dict[str, float] = {}  # kept in memory: a new leader gives every down node a fresh grace
        self._persisted: dict[str, float] = {}  # model -> when its record was last written by this leader

    async def read(self, *, now: float) -> Fleet:
        state = self._view.state
        models = [s.obj for s in state.values() if isinstance(s.obj, Model)]
        pools = {s.obj.name: s.obj for s in state.values() if isinstance(s.obj, NodePool)}
        loads, records, placements = await asyncio.gather(
            self._store.list(self._keys.load_prefix()), self._store.list(self._keys.scaling_prefix()),
            self._store.list(self._keys.placement_prefix()),
        )  # fmt: skip
        statuses = dict(self._fleet.statuses)
        registrations = dict(self._fleet.registrations)
        placed = [NodePlacement.model_validate_json(kv.value) for kv in placements.items]
        self.down_since = {
            n: self.down_since.get(n, now) for n in {*registrations, *(p.node for p in placed)} if down(statuses.get(n))
        }
        kept = [ScalingRecord.model_validate_json(kv.value) for kv in records.items]
        return Fleet(
            models=models, pools=pools, registrations=registrations, statuses=statuses, down_since=dict(self.down_since),
            reports=[RouterLoad.model_validate_json(kv.value) for kv in loads.items],
            records={r.model: r for r in kept}, placements={p.node: p for p in placed},
        )  # fmt: skip

    async def tick(self, election: Election, *, now: float | None = None) -> Decision:
        """Read, decide, and write what changed (placements, records), fenced; then the
        decisions that changed a model's replicas or nodes go to the audit log."""
        now = time.time() if now is None else now
        election.fence()  # a leader that knows it lost (or could not renew in time) reads nothing either
        fleet = await self.read(now=now)
        decision = decide(fleet, now=now, timing=self.timing)
        events = changes_of(fleet, decision)
        ops: list[Op] = [
            Put(self._keys.placement(node), placed.model_dump_json().encode())
            for node, placed in decision.placements.items()
            if ((before := fleet.placements.get(node)) is None or before.models != placed.models)
            and (placed.models or node in fleet.registrations)
        ]
        ops += [  # a node gone for good, whose replicas went elsewhere: nothing left to tell it
            Delete(self._keys.placement(node)) for node, before in fleet.placements.items()
            if node not in fleet.registrations
            and (node not in decision.placements or not decision.placements[node].models)
        ]  # fmt: skip
        due = [(name, r) for name, r in decision.records.items() if self._due(r, fleet.records.get(name), now=now)]
        ops += [Put(self._keys.scaling(name), record.model_dump_json().encode()) for name, record in due]
        gone = [name for name in fleet.records if name not in decision.records]  # no longer autoscaled
        ops += [Delete(self._keys.scaling(name)) for name in gone]
        revision = 0
        for start in range(0, len(ops), MAX_OPS):
            revision = await election.commit(ops[start : start + MAX_OPS])
        self._persisted.update((name, now) for name, _ in due)
        self.last = decision
        if events:
            self._unaudited.extend((revision, change) for change in events)
        await self._audit()
        return decision

    def _due(self, record: ScalingRecord, stored: ScalingRecord | None, *, now: float) -> bool:
        """A record is written when what it says changed, else every ``PERSIST_S`` (its windows: a
        new leader misses at most that much of them)."""
        said = ("desired", "ready", "placed", "reason", "panic", "short", "restarting")
        if stored is None or any(getattr(record, f) != getattr(stored, f) for f in said):
            return True
        return now - self._persisted.get(record.model, -PERSIST_S) >= PERSIST_S

    async def _audit(self) -> None:
        """Write the decisions not yet in the audit log; a database down keeps them (bounded) for the
        next tick: scaling never waits for it."""
        if self._history is None or not self._unaudited:
            return
        try:
            found = epochs.decode(await self._store.get(self._keys.epoch()))
            while self._unaudited:
                revision, change = self._unaudited[0]
                message = (change.after or {}).get("reason", "") if change.after else "no longer autoscaled"
                await self._history.record_events(actor=ACTOR, message=str(message), changes=[change], revision=revision,
                                                  epoch=found.id if found else LEGACY)  # fmt: skip
                self._unaudited.popleft()
        except HistoryUnavailable as exc:
            log.warning("autoscaler: %d decision(s) wait for the audit log: %s", len(self._unaudited), exc)

    async def run(self, election: Election, *, iterations: int | None = None) -> None:
        """Once the informers listed: lead, then tick every ``every_s`` while leading (``lead``)."""
        if self._synced is not None:
            await self._synced()
        await lead(election, self.tick, name="autoscaler", every_s=self.every_s, iterations=iterations)
