"""Restart coordination of supervised agents on the in-memory store: the drain's end (every
router has seen it and has nothing in flight on the node, or the bound), and turns per pool."""

from __future__ import annotations

import asyncio

import orjson

from agents.sidecar.restart import Restarts
from controlplane.store.keys import KeySpace
from controlplane.store.memory import MemoryStore
from schemas.placement import ScalingRecord
from schemas.status import RouterLoad


async def report(store: MemoryStore, keys: KeySpace, router: str, draining: bool, **in_flight: int) -> None:
    load = RouterLoad(router=router, in_flight=in_flight, draining=["n1"] if draining else [])
    await store.put(keys.load(router), orjson.dumps(load.model_dump(mode="json")))


async def test_drain_ends_when_every_router_saw_it_and_finished() -> None:
    store, keys = MemoryStore(), KeySpace("t")
    restarts = Restarts(store, keys, "n1", drain_s=10, ttl_s=5)
    task = asyncio.create_task(restarts.loads.run())
    try:
        await report(store, keys, "r1", True, n1=2)
        await report(store, keys, "r2", False)  # has not seen the drain yet
        await restarts.loads.wait_synced()
        await asyncio.sleep(0.05)
        assert restarts.waiting_for() == {"r1": 2, "r2": -1}
        drained = asyncio.create_task(restarts.drain(poll_s=0.01))
        await asyncio.sleep(0.05)
        assert not drained.done()
        await report(store, keys, "r2", True, n2=7)  # busy elsewhere only
        await report(store, keys, "r1", True)
        assert await asyncio.wait_for(drained, 2) == {}
    finally:
        task.cancel()


async def test_drain_is_bounded() -> None:
    store, keys = MemoryStore(), KeySpace("t")
    now = [0.0]
    restarts = Restarts(store, keys, "n1", drain_s=30, ttl_s=5, clock=lambda: now[0])
    task = asyncio.create_task(restarts.loads.run())
    try:
        await report(store, keys, "r1", True, n1=1)  # an answer that never ends
        drained = asyncio.create_task(restarts.drain(poll_s=0.01))
        await asyncio.sleep(0.05)
        assert not drained.done()
        now[0] = 31.0
        assert await asyncio.wait_for(drained, 2) == {"r1": 1}
    finally:
        task.cancel()


async def test_one_node_of_a_pool_at_a_time_and_a_node_without_its_turn_does_not_wait() -> None:
    store, keys = MemoryStore(), KeySpace("t")
    a, b = Restarts(store, keys, "a", drain_s=1, ttl_s=5), Restarts(store, keys, "b", drain_s=1, ttl_s=5)
    order: list[str] = []
    release = asyncio.Event()

    async def restart(r: Restarts, name: str, pools: tuple[str, ...]) -> bool:
        async with r.turn(pools) as mine:
            if not mine:
                order.append(f"{name} later")
                return False
            order.append(f"{name} in")
            if name == "a":
                await release.wait()
            order.append(f"{name} out")
            return True

    first = asyncio.create_task(restart(a, "a", ("gpu", "eu")))
    await asyncio.sleep(0.05)
    assert a.holding == ["eu", "gpu"]
    assert not await restart(b, "b", ("eu", "gpu"))  # a holds gpu: b gives eu back at once and does not wait
    assert order == ["a in", "b later"] and b.holding == []
    release.set()
    assert await asyncio.wait_for(first, 5)
    assert await restart(b, "b", ("gpu",))  # its next pass
    assert order == ["a in", "b later", "a out", "b in", "b out"] and a.holding == [] == b.holding


async def test_a_restart_waits_for_min_replicas_ready_elsewhere_and_the_wait_is_bounded() -> None:
    store, keys = MemoryStore(), KeySpace("t")
    now = [0.0]
    restarts = Restarts(store, keys, "n1", drain_s=1, ttl_s=5, clock=lambda: now[0])

    async def ready(model: str, n: int, restarting: tuple[str, ...] = ("n1",)) -> None:
        record = ScalingRecord(model=model, desired=1, ready=n, restarting=list(restarting))
        await store.put(keys.scaling(model), record.model_dump_json().encode())

    held = {"a": (1, True), "b": (0, True), "c": (2, False)}  # min_replicas, ready here
    await ready("a", 1)  # only this node's
    await ready("c", 2, restarting=())
    assert await restarts.short_elsewhere(held) == ["a", "c"]  # c's record was decided before it saw n1 wait
    await ready("c", 2)
    assert await restarts.short_elsewhere(held) == ["a"]  # b may go to zero; c has its two elsewhere
    heard: list[list[str]] = []

    async def waiting(short: list[str]) -> None:
        heard.append(short)

    task = asyncio.create_task(restarts.replicas_elsewhere(lambda: held, wait_s=60, poll_s=0.01, waiting=waiting))
    await asyncio.sleep(0.05)
    assert not task.done() and heard == [["a"]]
    await ready("a", 2)  # the autoscaler's extra replica is ready on another node
    assert await asyncio.wait_for(task, 2) == [] and heard == [["a"], []]
    await ready("a", 1)
    bounded = asyncio.create_task(restarts.replicas_elsewhere(lambda: held, wait_s=60, poll_s=0.01))
    await asyncio.sleep(0.05)
    now[0] = 61.0
    assert await asyncio.wait_for(bounded, 2) == ["a"]  # put off, not done below min_replicas
