"""The autoscaler on a real fleet (etcd, the control plane's leader loop, agents on simulated
nodes, the router): a model with ``placement.autoscale`` starts on one node, a load step brings a
second replica, the load gone takes it away again after the delay, drained first: no request fails,
and the router sends the model only where it is placed."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from controlplane.store.keys import KeySpace
from schemas.placement import NodePlacement, ScalingRecord
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer, free_port
from tests.helpers import model_doc
from tests.sim.engine import SimSettings
from tests.sim.server import SimServer

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
    assert all(s == 200 for s in statuses) and len(statuses) > 12, statuses  # every client was answered, more than once
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


async def test_from_zero_the_waiting_requests_bring_one_replica_that_clients_cannot_reload(
    fleet: tuple[Fleet, str],
) -> None:
    f, url = fleet
    loose = {"options": ["num_predict", "num_ctx"], "fields": ["keep_alive"]}  # what a fixed model would let through
    zero = model_doc("z", tag="qwen2.5:0.5b", placement={"autoscale": True, "min_replicas": 0, "max_replicas": 1}, client=loose)
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [zero]})).status_code == 200
    await f.until(lambda: "z" in f.router.feed.table.models, timeout_s=10)
    await asyncio.sleep(1)
    assert not f.router.feed.table.nodes.get("z")  # nothing asked for it: no replica
    pulls = sum(c[1] == "/api/pull" for n in ("node-0", "node-1") for c in f.sims[n].engine.calls)

    async def ask(c: httpx.AsyncClient, **more: object) -> int:
        body = {"model": "z", "prompt": "hi", "stream": False, "options": {"num_predict": 2}, **more}
        return (await c.post("/api/generate", json=body)).status_code

    def loads() -> int:
        return sum(f.sims[n].engine.loads["qwen2.5:0.5b"] for n in ("node-0", "node-1"))

    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        codes = await asyncio.gather(*(ask(c) for _ in range(50)))  # they wait in the queue while one replica loads
        assert codes == [200] * 50
        assert sum(c[1] == "/api/pull" for n in ("node-0", "node-1") for c in f.sims[n].engine.calls) == pulls + 1
        assert loads() == 1 and len(await placed(f, "z")) == 1  # one load for the one replica max_replicas allows
        # a client can neither evict the replica nor reload it with other load-time options
        assert await ask(c, keep_alive=0) == 200
        assert await ask(c, options={"num_ctx": 512, "num_predict": 2}) == 200
        reply = await c.post("/api/generate", json={"model": "z", "prompt": "hi", "stream": False, "keep_alive": 0,
                                                    "options": {"num_ctx": 1024}})  # fmt: skip
        assert reply.status_code == 200 and "keep_alive" in reply.headers["x-llmtune-overridden"]
    node = (await placed(f, "z"))[0]
    assert loads() == 1 and "qwen2.5:0.5b" in f.sims[node].engine.runners


async def test_a_rolling_restart_never_leaves_fewer_than_min_replicas_ready(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path
) -> None:
    """Two supervised nodes of a pool, one replica of a model with ``min_replicas: 1``: new start-time
    settings restart both Ollamas, one at a time; the node holding the replica waits until the
    autoscaler's extra replica is ready on the other, so one is loaded at every moment."""
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane(autoscaler=FAST)
    try:
        for name in ("gpu-a", "gpu-b"):
            port = free_port()
            f.sims[name] = SimServer(port)  # its URL only: the agent starts `python -m tests.sim` itself
            f.labels[name] = {"pool": "gpu"}
            await f.start_agent(name, ollama_command=[sys.executable, "-m", "tests.sim", "--port", str(port)], drain_s=5)
        one = model_doc("m", tag="llama3.2:1b", placement={"autoscale": True, "min_replicas": 1, "max_replicas": 1})
        pool = {"kind": "NodePool", "metadata": {"name": "gpu"}, "spec": {"node_selector": {"pool": "gpu"}}}
        assert (await f.api.post("/api/v1/config:apply", json={"objects": [pool, one]})).status_code == 200
        clients = {n: httpx.AsyncClient(base_url=f.sims[n].url, timeout=1) for n in ("gpu-a", "gpu-b")}

        async def holders() -> list[str]:
            out = []
            for name, c in clients.items():
                with contextlib.suppress(httpx.HTTPError):
                    if any(m["name"] == "llama3.2:1b" for m in (await c.get("/api/ps")).json()["models"]):
                        out.append(name)
            return out

        async def one_ready() -> bool:
            return len(await holders()) == 1

        await f.eventually(one_ready, timeout_s=20)
        first = (await holders())[0]
        seen: list[list[str]] = []
        stop = asyncio.Event()

        debug: list[object] = []  # what the store said at each sample: shown if a sample had no replica
        store = f.open_store()

        async def watch() -> None:
            while not stop.is_set():
                seen.append(await holders())
                kv = await store.get(f.keys.scaling("m"))
                rec = ScalingRecord.model_validate_json(kv.value) if kv else None
                where = [n for n in ("gpu-a", "gpu-b") if (p := await store.get(f.keys.placement(n))) and b'"m"' in p.value]
                debug.append((seen[-1], rec and (rec.ready, rec.placed, rec.restarting), where,
                              [(a.settings.node, a.restart_pending, a.draining) for a, _, _ in f.agents.values()]))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        pool["spec"] = {"node_selector": {"pool": "gpu"}, "server": {"num_parallel": 2}}
        assert (await f.api.post("/api/v1/config:apply", json={"objects": [pool]})).status_code == 200

        def restarted() -> bool:
            return all(a.status.server_settings == {"OLLAMA_NUM_PARALLEL": "2"} for a, _, _ in f.agents.values())

        await f.until(restarted, timeout_s=60, what=lambda: [a.status for a, _, _ in f.agents.values()])
        await f.eventually(one_ready, timeout_s=20)  # the extra replica goes again
        stop.set()
        await watcher
        await store.close()
        for c in clients.values():
            await c.aclose()
        assert all(seen), "\n".join(str((i, d)) for i, d in enumerate(debug) if i == 0 or d != debug[i - 1])  # never none
        assert any(first not in s for s in seen)  # the first holder did restart (its replica moved first)
        rows = (await f.api.get("/api/v1/history", params={"kind": "scaling", "name": "m"})).json()["items"]
        assert rows and all(r["actor"] == "autoscaler" for r in rows)
        assert any("restart" in r["message"] for r in rows), [r["message"] for r in rows]
    finally:
        await f.close()
