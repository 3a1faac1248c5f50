"""The autoscaler's leader as a process (``python -m controlplane.api``), under steady load on a real
fleet (etcd, agents on simulated nodes, the router): killed with SIGKILL, another control plane
leads within its lease's TTL and the replicas stay as they are, each loaded once; paused with
SIGSTOP past its TTL and resumed, its writes are refused and nothing changes; every control plane
restarted, the new leader carries the windows on and scales nothing for two scale-down delays."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from controlplane.store.keys import KeySpace
from deploy.local import processes
from schemas.placement import NodePlacement, ScalingRecord
from tests.fixtures.controlplanes import ControlPlanes
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc
from tests.sim.engine import SimSettings

pytestmark = pytest.mark.etcd
TTL_S = 3
DELAY_S = 5.0
NODES = ("node-0", "node-1", "node-2")
TAG = "llama3.2:1b"
SCALER = {"EVERY_S": "0.4", "STABLE_WINDOW_S": "3", "PANIC_WINDOW_S": "1", "SCALE_DOWN_DELAY_S": str(DELAY_S),
          "STALE_AFTER_S": "5", "LEASE_TTL_S": str(TTL_S)}  # fmt: skip


@pytest.fixture
async def fleet(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[tuple[Fleet, str, ControlPlanes]]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane(autoscaler={"enabled": False})  # the API; the processes below lead the autoscaler
    for name in NODES:
        await f.add_node(name, sim=SimSettings(token_s=0.05, load_s=1.0))
    model = model_doc("m", tag=TAG, placement={"autoscale": True, "min_replicas": 1, "max_replicas": 3})
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [model]})).status_code == 200
    url = await f.start_router()
    planes = ControlPlanes(etcd_server.url, keys, tmp_path, env={f"LLMTUNE_AUTOSCALER__{k}": v for k, v in SCALER.items()})
    try:
        yield f, url, planes
    finally:
        await asyncio.to_thread(planes.stop)
        await f.close()


async def test_the_leader_killed_paused_and_restarted_changes_no_replica(fleet: tuple[Fleet, str, ControlPlanes]) -> None:
    f, url, planes = fleet
    store = f.router.store
    first, second = await asyncio.to_thread(planes.start, "cp-a"), await asyncio.to_thread(planes.start, "cp-b")
    pids = {first.pid: "cp-a", second.pid: "cp-b"}

    async def leader() -> str | None:
        kv = await store.get(f.keys.election("autoscaler"))
        return pids.get(int(kv.value.decode().rsplit("-", 1)[1])) if kv is not None else None

    async def placed() -> tuple[frozenset[str], dict[str, int]]:
        """The nodes given the model, and each placement key's revision."""
        nodes, revisions = set(), {}
        for node in NODES:
            kv = await store.get(f.keys.placement(node))
            if kv is not None:
                revisions[node] = kv.mod_revision
                if "m" in NodePlacement.model_validate_json(kv.value).models:
                    nodes.add(node)
        return frozenset(nodes), revisions

    statuses: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:  # six in flight against four slots a replica: two replicas, steadily
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            while not stop.is_set():
                body = {"model": "m", "prompt": "tell me a story", "stream": False, "options": {"num_predict": 16}}
                statuses.append((await c.post("/api/generate", json=body)).status_code)

    clients = [asyncio.create_task(client()) for _ in range(6)]
    try:

        async def two_ready() -> bool:
            nodes, _ = await placed()
            return len(nodes) == 2 and sum(TAG in f.sims[n].engine.runners for n in NODES) == 2

        await f.eventually(two_ready, timeout_s=30)
        await asyncio.sleep(2 * DELAY_S)  # settled: the windows hold the load's own noise
        steady, _ = await placed()
        assert len(steady) == 2

        def loaded_once() -> dict[str, int]:
            loads = {n: f.sims[n].engine.loads[TAG] for n in NODES}
            assert all(n <= 1 for n in loads.values()), loads  # at most one load per (node, model), ever
            return loads

        loaded_once()

        # 1. SIGKILL the leader: the other leads within the TTL and a margin; nothing is placed anew
        was = await leader()
        assert was in ("cp-a", "cp-b")
        killed = first if was == "cp-a" else second
        killed.kill()
        started = time.monotonic()
        await f.eventually(lambda: _other(leader, was), timeout_s=TTL_S + 3)
        took_over = time.monotonic() - started
        await asyncio.sleep(2)
        assert (await placed())[0] == steady and took_over <= TTL_S + 3
        loaded_once()

        # 2. SIGSTOP the new leader past its TTL, then SIGCONT: a third leads, the paused one's writes are refused
        paused = second if killed is first else first
        pids[(third := await asyncio.to_thread(planes.start, "cp-c")).pid] = "cp-c"
        os.kill(paused.pid, signal.SIGSTOP)
        await f.eventually(lambda: _is(leader, "cp-c"), timeout_s=TTL_S + 3)
        await asyncio.sleep(1)
        _, revisions = await placed()
        os.kill(paused.pid, signal.SIGCONT)
        name = pids[paused.pid]
        await f.eventually(lambda: _logged(planes, name, "campaigning again"), timeout_s=10)
        await asyncio.sleep(2)
        assert await leader() == "cp-c" and (await placed()) == (steady, revisions)  # not one placement rewritten
        loaded_once()

        # 3. every control plane restarted: the new leader reads the windows and changes nothing for two delays
        await asyncio.to_thread(processes.stop, [paused, third])
        pids[(await asyncio.to_thread(planes.start, "cp-d")).pid] = "cp-d"
        await f.eventually(lambda: _is(leader, "cp-d"), timeout_s=TTL_S + 5)
        until = time.monotonic() + 2 * DELAY_S
        while time.monotonic() < until:
            assert (await placed())[0] == steady
            await asyncio.sleep(0.2)
        record = ScalingRecord.model_validate_json((await store.get(f.keys.scaling("m"))).value)  # type: ignore[union-attr]
        assert record.desired == 2 and record.ready == 2, record
        loaded_once()
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert statuses and all(s == 200 for s in statuses), [s for s in statuses if s != 200]


async def _other(leader: Callable[[], Awaitable[str | None]], was: str) -> bool:
    now = await leader()
    return now is not None and now != was


async def _is(leader: Callable[[], Awaitable[str | None]], name: str) -> bool:
    return await leader() == name


async def _logged(planes: ControlPlanes, name: str, text: str) -> bool:
    return text in planes.log(name)
