"""The autoscaler's tick (controlplane/services/autoscaler.py): from the routers' load reports and
the nodes' status to replicas and placements, fenced writes, windows carried by the store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from controlplane.db.engine import make_engine, migrate
from controlplane.services.autoscaler import Autoscaler, Fleet, decide
from controlplane.services.history import History
from controlplane.store.errors import LeadershipLost
from controlplane.store.informer import Informer
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from controlplane.store.memory import MemoryStore
from controlplane.store.view import ConfigView
from schemas.model import Model
from schemas.placement import NodePlacement, ScalingRecord
from schemas.status import Capacity, LoadedModel, MemoryEstimate, ModelLoad, NodeRegistration, NodeStatus, RouterLoad
from tests.helpers import model_doc

GB = 1_000_000_000
T0 = 1_800_000_000.0
AUTO = Model.model_validate(
    model_doc("m", tag="llama3.2:1b", placement={"autoscale": True, "min_replicas": 0, "max_replicas": 3})
)
FIXED = Model.model_validate(model_doc("fixed", tag="qwen:7b"))
REGS = {
    f"n{i}": NodeRegistration(name=f"n{i}", ollama_url="http://127.0.0.1:1",
                              capacity=Capacity(memory_bytes=16 * GB, max_loaded_models=3, max_parallel=4))
    for i in range(3)
}  # fmt: skip


def status(node: str, *loaded: str) -> NodeStatus:
    return NodeStatus(
        node=node,
        ollama_reachable=True,
        loaded_models=[LoadedModel(name=t, size_bytes=2 * GB, size_vram_bytes=2 * GB) for t in loaded],
    )


def report(at: float, queued: int) -> RouterLoad:
    return RouterLoad(router="r", models={"m": ModelLoad(queued=queued)}, updated_at=datetime.fromtimestamp(at, UTC))


def fleet(
    at: float, queued: int, *, placed: dict[str, list[str]], loaded: dict[str, list[str]], records: dict[str, ScalingRecord]
) -> Fleet:
    return Fleet(
        models=[AUTO, FIXED], pools={}, registrations=REGS,
        statuses={n: status(n, *loaded.get(n, [])) for n in REGS}, reports=[report(at, queued)], records=records,
        placements={n: NodePlacement(node=n, models=m) for n, m in placed.items()},
    )  # fmt: skip


def test_a_load_step_is_met_at_most_twice_as_many_a_tick_and_one_load_per_node() -> None:
    placed: dict[str, list[str]] = {}
    records: dict[str, ScalingRecord] = {}
    counts = []
    for tick in range(6):
        now = T0 + 3 * tick
        # what was placed in the last tick is loaded by now
        loaded = {n: ["llama3.2:1b"] for n, models in placed.items() if "m" in models}
        decision = decide(fleet(now, 12, placed=placed, loaded=loaded, records=records), now=now)
        placed = {n: p.models for n, p in decision.placements.items()}
        records = decision.records
        counts.append((records["m"].ready, records["m"].desired, records["m"].placed))
    assert counts[0] == (0, 1, 1) and counts[1] == (1, 2, 2) and counts[2][1:] == (3, 3)  # 12 in flight / 4 per replica
    assert all(d <= 3 for _, d, _ in counts) and records["m"].panic
    assert sum("m" in models for models in placed.values()) == 3  # spread over the three nodes, one each
    assert "fixed" not in str(placed)  # models without autoscale are not the autoscaler's


def test_stale_reports_hold_and_records_carry_the_windows() -> None:
    placed = {"n0": ["m"], "n1": ["m"]}
    loaded = {"n0": ["llama3.2:1b"], "n1": ["llama3.2:1b"]}
    records: dict[str, ScalingRecord] = {}
    for tick in range(100):  # five minutes of no load: down one replica
        now = T0 + 3 * tick
        decision = decide(fleet(now, 0, placed=placed, loaded=loaded, records=records), now=now)
        records = decision.records
    assert records["m"].desired == 1
    stale = fleet(T0 + 400, 0, placed=placed, loaded=loaded, records={})
    stale = replace(stale, reports=[report(T0 + 300, 0)])
    held = decide(stale, now=T0 + 400)
    assert held.records["m"].desired == 2 and "no load known" in held.records["m"].reason


async def test_the_tick_writes_fenced_and_a_replaced_leader_writes_nothing() -> None:
    store, keys = MemoryStore(), KeySpace("t")
    view = ConfigView(keys)
    await store.put(keys.config("models", "m"), AUTO.model_dump_json(by_alias=True).encode())
    informer = Informer(store, keys.config_prefix())
    informer.add_handler(view.on_snapshot)
    await informer.sync_once(max_batches=0)  # the list alone: the view has the models
    await store.put(keys.load("r"), report(T0, 8).model_dump_json().encode())
    statuses = {n: status(n) for n in REGS}
    scaler = Autoscaler(store, keys, view=view, fleet=SimpleNamespace(registrations=REGS, statuses=statuses))
    leader = Election(store, keys.election("autoscaler"), "a", ttl_s=5)
    assert await leader.campaign_once()
    decision = await scaler.tick(leader, now=T0 + 1)
    written = [n for n in REGS if await store.get(keys.placement(n))]
    assert decision.records["m"].desired == 1 and len(written) == 3
    assert ScalingRecord.model_validate_json((await store.get(keys.scaling("m"))).value).desired == 1  # type: ignore[union-attr]
    await store.revoke_lease(leader.keeper.lease_id)
    other = Election(store, keys.election("autoscaler"), "b", ttl_s=5)
    assert await other.campaign_once()
    before = await store.current_revision()
    with pytest.raises(LeadershipLost):
        await scaler.tick(leader, now=T0 + 12)  # its record is due again (its windows moved)
    assert await store.current_revision() == before


def test_a_down_node_keeps_its_replica_through_its_grace_then_it_moves_one_node_a_tick() -> None:
    loaded = {"n0": ["llama3.2:1b"], "n1": ["llama3.2:1b"]}
    base = fleet(T0, 8, placed={"n0": ["m"], "n1": ["m"], "n2": []}, loaded=loaded, records={})
    statuses = {n: s for n, s in base.statuses.items() if n != "n0"}  # n0's agent stopped reporting
    flap = replace(base, statuses=statuses, down_since={"n0": T0 - 10})
    kept = decide(flap, now=T0)
    assert "m" in kept.placements["n0"].models and "m" not in kept.placements["n2"].models  # within its grace
    gone = decide(replace(flap, down_since={"n0": T0 - 31}), now=T0)
    assert "n0" not in gone.placements and "m" in gone.placements["n2"].models  # past it: elsewhere
    both = replace(flap, statuses={"n2": base.statuses["n2"]}, down_since={"n0": T0 - 40, "n1": T0 - 40})
    one = decide(both, now=T0)
    assert "n0" not in one.placements and "m" in one.placements["n1"].models  # one node's replicas move per tick


def test_models_every_node_holds_take_room_only_while_they_serve() -> None:
    regs = {n: r.model_copy(update={"capacity": Capacity(memory_bytes=16 * GB, max_loaded_models=1, max_parallel=4)})
            for n, r in REGS.items()}  # fmt: skip
    idle = replace(fleet(T0, 4, placed={}, loaded={}, records={}), registrations=regs)
    assert sum("m" in p.models for p in decide(idle, now=T0).placements.values()) == 1  # "fixed" is on disk, not loaded
    warm = replace(idle, statuses={n: status(n, "qwen:7b") for n in regs})  # preloaded, idle: Ollama evicts it for m
    assert sum("m" in p.models for p in decide(warm, now=T0).placements.values()) == 1
    load = RouterLoad(router="r", models={"m": ModelLoad(queued=4), "fixed": ModelLoad(in_flight={n: 1 for n in regs})},
                      updated_at=datetime.fromtimestamp(T0, UTC))  # fmt: skip
    busy = replace(warm, reports=[load])
    assert "every matching node runs as many models" in decide(busy, now=T0).records["m"].short


async def test_decisions_go_to_the_audit_log_and_wait_there_while_its_database_is_down(tmp_path: Path) -> None:
    store, keys = MemoryStore(), KeySpace("t")
    view = ConfigView(keys)
    await store.put(keys.config("models", "m"), AUTO.model_dump_json(by_alias=True).encode())
    informer = Informer(store, keys.config_prefix())
    informer.add_handler(view.on_snapshot)
    await informer.sync_once(max_batches=0)
    await store.put(keys.load("r"), report(T0, 8).model_dump_json().encode())
    down = History(make_engine(f"sqlite:///{tmp_path / 'absent' / 'meta.db'}"))  # its directory does not exist
    nodes = SimpleNamespace(registrations=REGS, statuses={n: status(n) for n in REGS})
    scaler = Autoscaler(store, keys, view=view, fleet=nodes, history=down)
    leader = Election(store, keys.election("autoscaler"), "a", ttl_s=5)
    assert await leader.campaign_once()
    await scaler.tick(leader, now=T0 + 1)  # scales all the same
    assert (await store.get(keys.scaling("m"))) is not None
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    migrate(engine)
    scaler._history = history = History(engine)
    await scaler.tick(leader, now=T0 + 4)  # the same decision: nothing new, the kept one is written
    rows = await history.history(kind="scaling")
    assert [(r.actor, r.name, r.action, r.after["desired"]) for r in rows] == [("autoscaler", "m", "create", 1)]  # type: ignore[index]
    assert "in flight" in rows[0].message and rows[0].revision > 0
    assert await history.latest_revision() == 0 and await history.state_at(rows[0].revision) == {}  # not configuration
    plain = Model.model_validate(model_doc("m", tag="llama3.2:1b"))
    await store.put(keys.config("models", "m"), plain.model_dump_json(by_alias=True).encode())
    again = Informer(store, keys.config_prefix())
    again.add_handler(view.on_snapshot)
    await again.sync_once(max_batches=0)
    await scaler.tick(leader, now=T0 + 7)  # autoscale is off: the record goes, and the log says so
    assert (await store.get(keys.scaling("m"))) is None
    assert [r.action for r in await history.history(kind="scaling")] == ["delete", "create"]


def test_a_node_about_to_restart_keeps_its_replica_until_one_more_is_placed_elsewhere() -> None:
    base = fleet(T0, 2, placed={"n0": ["m"], "n1": [], "n2": []}, loaded={"n0": ["llama3.2:1b"]}, records={})
    steady = decide(base, now=T0)
    assert [n for n, p in steady.placements.items() if "m" in p.models] == ["n0"]
    leaving = replace(base, statuses={**base.statuses, "n0": base.statuses["n0"].model_copy(update={"restart_pending": True})})
    surge = decide(leaving, now=T0)
    holders = sorted(n for n, p in surge.placements.items() if "m" in p.models)
    assert holders[0] == "n0" and len(holders) == 2  # n0 keeps it until the node restarts; one more elsewhere
    assert surge.records["m"].desired == 1 and surge.records["m"].placed == 2 and "n0 restart" in surge.records["m"].reason


def test_the_claim_is_the_agents_estimate_until_a_node_reports_the_size_ollama_gave() -> None:
    big = MemoryEstimate(digest="abc", num_ctx=0, parallel=4, bytes=15 * GB, source="gguf")  # over 90% of 16 GB
    base = fleet(T0, 8, placed={}, loaded={}, records={})
    estimated = {n: s.model_copy(update={"estimates": {"llama3.2:1b": big}}) for n, s in base.statuses.items()}
    guessed = replace(base, statuses=estimated)
    short = decide(guessed, now=T0)
    assert not any("m" in p.models for p in short.placements.values()) and short.records["m"].short
    seen = LoadedModel(name="llama3.2:1b", size_bytes=3 * GB, size_vram_bytes=3 * GB, digest="abc", context_length=4096)
    elsewhere = guessed.statuses["n0"].model_copy(update={"loaded_models": [seen]})  # loaded outside the autoscaler's word
    fits = decide(replace(guessed, statuses={**guessed.statuses, "n0": elsewhere}), now=T0)
    assert sum("m" in p.models for p in fits.placements.values()) == 2 and not fits.records["m"].short  # 3 GB each


async def test_a_new_leader_decides_nothing_before_its_views_have_listed_the_store() -> None:
    """Before its informers list the store every node would look gone and lose its replicas."""
    store, keys = MemoryStore(), KeySpace("t")
    view = ConfigView(keys)
    await store.put(keys.config("models", "m"), AUTO.model_dump_json(by_alias=True).encode())
    await store.put(keys.load("r"), report(T0, 8).model_dump_json().encode())
    informer = Informer(store, keys.config_prefix())
    informer.add_handler(view.on_snapshot)
    listed = asyncio.Event()
    nodes = SimpleNamespace(registrations=REGS, statuses={n: status(n) for n in REGS})
    scaler = Autoscaler(store, keys, view=view, fleet=nodes, every_s=0.05, synced=listed.wait)
    task = asyncio.create_task(scaler.run(Election(store, keys.election("autoscaler"), "a", ttl_s=5)))
    try:
        await asyncio.sleep(0.2)
        assert scaler.last is None and await store.get(keys.election("autoscaler")) is None  # not even campaigning
        await informer.sync_once(max_batches=0)
        listed.set()
        await asyncio.sleep(0.3)  # a few ticks
        assert scaler.last is not None and scaler.last.records["m"].desired >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
