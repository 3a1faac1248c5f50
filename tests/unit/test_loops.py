"""The leader loop every elected control-plane loop runs on: ticks only while leading, with the
leader's fence; campaigns again once the lead is lost; a failing tick is retried; resigns on exit."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.services.loops import lead
from controlplane.store.base import Put
from controlplane.store.errors import LeadershipLost
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from controlplane.store.memory import MemoryStore

KEYS = KeySpace("loops")


async def test_ticks_only_while_leading_and_resigns_at_the_end() -> None:
    store = MemoryStore()
    key = KEYS.election("upkeep")
    other = Election(store, key, "other", ttl_s=5)
    assert await other.campaign_once()
    mine = Election(store, key, "mine", ttl_s=5)
    ticks: list[str] = []

    async def tick(election: Election) -> None:
        await election.commit([Put(KEYS.placement("n"), f"tick {len(ticks)}".encode())])
        ticks.append(election.candidate)

    task = asyncio.create_task(lead(mine, tick, name="test", every_s=0.01, iterations=3))
    await asyncio.sleep(0.2)
    assert ticks == []  # another leads: nothing is done
    await other.resign()
    async with asyncio.timeout(5):
        await task
    assert ticks == ["mine"] * 3
    assert await store.get(key) is None  # it resigned: the next candidate leads at once
    kv = await store.get(KEYS.placement("n"))
    assert kv is not None and kv.value == b"tick 2"


async def test_a_tick_refused_for_lost_leadership_campaigns_again(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    election = Election(store, KEYS.election("finetune"), "a", ttl_s=9)
    calls = 0

    async def tick(e: Election) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LeadershipLost("a could not renew its lease within 6 s: it stops leading")  # as fence() says

    await asyncio.wait_for(lead(election, tick, name="fine-tuning jobs", every_s=0, iterations=2), 5)
    assert calls == 3  # the refused tick does not count: two ticks ran as leader after it campaigned again
    assert "fine-tuning jobs: a could not renew its lease within 6 s: it stops leading; campaigning again" in caplog.text


async def test_a_failing_tick_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    calls = 0

    async def tick(_: Election) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the database is away")

    election = Election(store, KEYS.election("upkeep"), "a", ttl_s=5)
    await asyncio.wait_for(lead(election, tick, name="repair", every_s=0.01, iterations=3), 5)
    assert calls == 3
    assert "repair failed; trying again in 0.01 s" in caplog.text


async def test_leadership_is_read_again_and_lost_lead_means_campaigning() -> None:
    store = MemoryStore()
    key = KEYS.election("monitor")
    now = [0.0]
    mine = Election(store, key, "mine", ttl_s=5)
    other = Election(store, key, "other", ttl_s=5)
    ticks = 0
    usurped = asyncio.Event()

    async def tick(_: Election) -> None:
        nonlocal ticks
        ticks += 1
        now[0] += 10  # past check_s: the loop reads the key after this tick
        if ticks == 2:
            await store.revoke_lease(mine.keeper.lease_id)  # its lease ended (a pause), and another leads
            assert await other.campaign_once()
            usurped.set()

    task = asyncio.create_task(lead(mine, tick, name="test", every_s=0, check_s=5, clock=lambda: now[0], iterations=3))
    await usurped.wait()
    await asyncio.sleep(0.1)
    assert ticks == 2  # it read the key, saw another lead, and waits to lead again
    await other.resign()
    async with asyncio.timeout(5):
        await task
    assert ticks == 3
