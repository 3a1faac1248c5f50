"""The admission queue on a real fleet: one node with one slot (a NodePool's max_concurrency_per_node),
requests of high, normal and low priority keys waiting for it in order, the route's max wait and
depth (503 with Retry-After), and a client that leaves while queued."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.store.keys import KeySpace
from schemas.status import RouterLoad
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc, route_doc
from tests.sim.engine import SimSettings

pytestmark = pytest.mark.etcd
POOL = {"kind": "NodePool", "metadata": {"name": "one-slot"},
        "spec": {"node_selector": {"pool": "one"}, "max_concurrency_per_node": 1}}  # fmt: skip


@pytest.fixture
async def fleet(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[tuple[Fleet, str, dict[str, str]]]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane()
    await f.add_node("node-0", labels={"pool": "one"}, sim=SimSettings(token_s=0.1))
    short = route_doc("short", "m", match={"model_aliases": ["short"]})
    short["spec"]["queue"] = {"max_wait_ms": 300, "max_depth": 1}
    objects = [POOL, model_doc("m", tag="llama3.2:1b"), route_doc("long", "m", match={"model_aliases": ["long"]}), short]
    assert (await f.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
    url = await f.start_router(auth="required")
    secrets = {}
    for priority in ("high", "normal", "low"):
        resp = await f.api.post("/api/v1/keys", json={"name": priority, "tenant": "t", "priority": priority})
        secrets[priority] = resp.json()["secret"]
    await f.until(lambda: {"high", "normal", "low"} <= set(f.router.feed.keys), timeout_s=5)

    async def routable() -> bool:
        async with httpx.AsyncClient(headers={"x-api-key": secrets["normal"]}) as c:
            return bool((await c.get(f"{url}/api/tags")).json()["models"])

    await f.eventually(routable, timeout_s=15)
    yield f, url, secrets
    await f.close()


async def ask(url: str, secret: str, model: str, tokens: int, done: list[str] | None = None, name: str = "") -> httpx.Response:
    prompt = "tell me a long story " * 30  # the simulator's answer grows with the prompt; num_predict cuts it
    body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False, "options": {"num_predict": tokens}}
    async with httpx.AsyncClient(timeout=30) as c:
        resp = await c.post(f"{url}/api/generate", json=body, headers={"x-api-key": secret})
    if done is not None:
        done.append(name)
    return resp


async def test_waiters_are_served_by_priority_then_in_order(fleet: tuple[Fleet, str, dict[str, str]]) -> None:
    f, url, secrets = fleet
    done: list[str] = []
    holder = asyncio.create_task(ask(url, secrets["normal"], "long", 40, done, "holder"))  # the only slot, ~1.2 s (12 tokens)
    await f.until(lambda: sum(f.router.core.live.in_flight_by_node().values()) == 1, timeout_s=5)
    tasks = []
    order = (("low-1", "low"), ("normal-1", "normal"), ("high-1", "high"), ("normal-2", "normal"), ("high-2", "high"))
    for name, priority in order:
        tasks.append(asyncio.create_task(ask(url, secrets[priority], "long", 2, done, name)))
        await f.until(lambda n=len(tasks): f.router.queue.waiting("m") == n, timeout_s=5,
                      what=lambda: [t.result().text if t.done() else "-" for t in tasks])  # arrival order is fixed
    answers = await asyncio.gather(holder, *tasks)
    assert [a.status_code for a in answers] == [200] * 6
    assert done == ["holder", "high-1", "high-2", "normal-1", "normal-2", "low-1"]
    async with httpx.AsyncClient() as c:
        metrics = (await c.get(f"{url}/metrics")).text
    assert 'llmtune_router_queue_depth{model="m",priority="low"} 0.0' in metrics
    assert 'llmtune_router_queue_wait_seconds_count{model="m",priority="high"} 2.0' in metrics


async def test_max_wait_max_depth_and_a_client_that_leaves(fleet: tuple[Fleet, str, dict[str, str]]) -> None:
    f, url, secrets = fleet
    holder = asyncio.create_task(ask(url, secrets["normal"], "long", 40))  # ~1.2 s on the only slot
    await f.until(lambda: sum(f.router.core.live.in_flight_by_node().values()) == 1, timeout_s=5)
    waiting = asyncio.create_task(ask(url, secrets["normal"], "short", 1))
    await f.until(lambda: f.router.queue.waiting("m") == 1, timeout_s=5)
    started = time.monotonic()
    deep = await ask(url, secrets["high"], "short", 1)  # the route lets one wait: the second is refused at once
    assert deep.status_code == 503 and deep.headers["retry-after"] == "1" and "already wait" in deep.json()["error"]
    assert time.monotonic() - started < 0.2
    timed_out = await waiting  # its route waits 300 ms at most
    assert timed_out.status_code == 503 and "in time" in timed_out.json()["error"]

    # a client that leaves while queued is gone from the queue; the next one gets the slot
    leaver = asyncio.create_task(ask(url, secrets["low"], "long", 1))
    await f.until(lambda: f.router.queue.waiting("m") == 1, timeout_s=5)
    leaver.cancel()
    await f.until(lambda: f.router.queue.waiting("m") == 0, timeout_s=5)
    patient = asyncio.create_task(ask(url, secrets["low"], "long", 1))
    assert (await holder).status_code == 200
    assert (await patient).status_code == 200


async def test_the_load_report_carries_each_models_signals(fleet: tuple[Fleet, str, dict[str, str]]) -> None:
    """What the autoscaler reads, under the router's lease: in flight per node, the queue, its
    longest wait, the 503s for want of a slot, tokens per second; refreshed while nothing changes."""
    f, url, secrets = fleet
    key = f.keys.load(f.router.load._name)

    async def report() -> RouterLoad:
        kv = await f.router.store.get(key)
        assert kv is not None
        return RouterLoad.model_validate_json(kv.value)

    holder = asyncio.create_task(ask(url, secrets["normal"], "long", 12))  # the only slot, ~1.2 s
    await f.until(lambda: sum(f.router.core.live.in_flight_by_node().values()) == 1, timeout_s=5)
    waiter = asyncio.create_task(ask(url, secrets["normal"], "long", 2))
    await f.until(lambda: f.router.queue.waiting("m") == 1, timeout_s=5)
    refused = await ask(url, secrets["normal"], "short", 2)  # the short route's queue holds one: full
    assert refused.status_code == 503

    async def busy() -> bool:
        m = (await report()).models.get("m")
        return m is not None and m.in_flight == {"node-0": 1} and m.queued == 1 and m.refused == 1

    await f.eventually(busy, timeout_s=5)
    await asyncio.gather(holder, waiter)

    async def after() -> bool:
        m = (await report()).models.get("m")
        return m is not None and not m.in_flight and not m.queued and m.longest_wait_s > 0.5
        # the waiter's wait (about the holder's answer) is in the report after it

    await f.eventually(after, timeout_s=5)
    produced = (await report()).models["m"]
    assert produced.refused == 1
    first = (await report()).updated_at
    await asyncio.sleep(f.router.load._refresh_s + 1.2)  # nothing changed: written again all the same
    assert (await report()).updated_at != first
