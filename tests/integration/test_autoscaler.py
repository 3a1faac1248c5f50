"""The autoscaler on a real fleet (etcd, the control plane's leader loop, agents on simulated
nodes, the router): a model with ``placement.autoscale`` starts on one node, a load step brings a
second replica, the load gone takes it away again after the delay, drained first: no request fails,
and the router sends the model only where it is placed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from controlplane.store.keys import KeySpace
from schemas.placement import NodePlacement, ScalingRecord
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc
from tests.sim.engine import SimSettings

pytestmark = pytest.mark.etcd
FAST = {"every_s": 0.3, "stable_window_s": 2.0, "panic_window_s": 1.0, "scale_down_delay_s": 3.0, "stale_after_s": 5.0}
MODEL = model_doc("m", tag="llama3.2:1b", placement={"autoscale": True, "min_replicas": 1, "max_replicas": 2})


@pytest.fixture
async def fleet(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[tuple[Fleet, str]]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane(autoscaler=FAST)
    for i in range(2):
        await f.add_node(f"node-{i}", sim=SimSettings(token_s=0.05), agent={"drain_s": 10})
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [MODEL]})).status_code == 200
    url = await f.start_router()
    yield f, url
    await f.close()


async def placed(f: Fleet, model: str = "m") -> list[str]:
    """The nodes the autoscaler placed ``model`` on."""
    out = []
    for node in ("node-0", "node-1"):
        kv = await f.router.store.get(f.keys.placement(node))
        if kv is not None and model in NodePlacement.model_validate_json(kv.value).models:
            out.append(node)
    return out


def loaded(f: Fleet) -> list[str]:
    return [n for n in ("node-0", "node-1") if "llama3.2:1b" in f.sims[n].engine.runners]


async def test_a_load_step_adds_a_replica_and_its_end_takes_it_away(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet

    async def one_replica() -> bool:
        return len(await placed(f)) == 1 and len(loaded(f)) == 1 and len(f.router.feed.table.nodes.get("m", ())) == 1

    await f.eventually(one_replica, timeout_s=15)
    first = (await placed(f))[0]
    other = "node-1" if first == "node-0" else "node-0"
    f.sims[other].engine.add_pulled("llama3.2:1b")  # on its disk too, as after an earlier scale-down
    await f.until(lambda: "llama3.2:1b" in f.router.feed._statuses[other].available_models, timeout_s=10)
    f.sims[other].engine.calls.clear()
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        for _ in range(3):  # the other node could serve it (it has the model on disk) but is not given it
            ask = {"model": "m", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
            assert (await c.post("/api/generate", json=ask)).status_code == 200
    assert not [c for c in f.sims[other].engine.calls if c[1] == "/api/generate"]
    statuses: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            while not stop.is_set():
                body = {"model": "m", "prompt": "tell me a story " * 10, "stream": False, "options": {"num_predict": 12}}
                statuses.append((await c.post("/api/generate", json=body)).status_code)

    for node in ("node-0", "node-1"):
        f.sims[node].engine.calls.clear()
    clients = [asyncio.create_task(client()) for _ in range(12)]  # 12 in flight against 4 slots a replica

    async def two_replicas() -> bool:
        return len(await placed(f)) == 2 and len(loaded(f)) == 2 and len(f.router.feed.table.nodes.get("m", ())) == 2

    await f.eventually(two_replicas, timeout_s=20)
    await asyncio.sleep(1.5)  # both serve
    served = {n: sum(c[1] == "/api/generate" for c in f.sims[n].engine.calls) for n in ("node-0", "node-1")}
    stop.set()
    await asyncio.gather(*clients)
    assert all(s == 200 for s in statuses) and len(statuses) > 24, statuses
    assert all(served.values()), served

    async def back_to_one() -> bool:
        return len(await placed(f)) == 1 and len(loaded(f)) == 1

    await f.eventually(back_to_one, timeout_s=30)  # after the delay, drained, unloaded
    kv = await f.router.store.get(f.keys.scaling("m"))
    assert kv is not None
    record = ScalingRecord.model_validate_json(kv.value)
    assert (record.desired, record.ready) == (1, 1) and record.reason, record

    async def shown() -> bool:  # what operators see: the models' status and the control plane's metrics
        status = (await f.api.get("/api/v1/models/status", params={"model": "m"})).json()["models"][0]
        metrics = (await f.api.get("/metrics")).text
        return (
            status["desired_nodes"] == 1 and status["autoscale"]["placed"] == 1 and len(status["nodes"]) == 1
            and 'llmtune_model_replicas{kind="desired",model="m"} 1.0' in metrics
        )  # fmt: skip

    await f.eventually(shown, timeout_s=10)


async def test_from_zero_the_waiting_requests_bring_one_replica(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    zero = model_doc("z", tag="qwen2.5:0.5b", placement={"autoscale": True, "min_replicas": 0, "max_replicas": 1})
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [zero]})).status_code == 200
    await f.until(lambda: "z" in f.router.feed.table.models, timeout_s=10)
    await asyncio.sleep(1)
    assert not f.router.feed.table.nodes.get("z")  # nothing asked for it: no replica
    pulls = sum(c[1] == "/api/pull" for n in ("node-0", "node-1") for c in f.sims[n].engine.calls)

    async def ask(c: httpx.AsyncClient) -> int:
        body = {"model": "z", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
        return (await c.post("/api/generate", json=body)).status_code

    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        codes = await asyncio.gather(*(ask(c) for _ in range(20)))  # they wait in the queue while one replica loads
    assert codes == [200] * 20
    assert sum(c[1] == "/api/pull" for n in ("node-0", "node-1") for c in f.sims[n].engine.calls) == pulls + 1  # one load
    assert len(await placed(f, "z")) == 1
