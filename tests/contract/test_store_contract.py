"""One contract suite for every ConfigStore backend (memory and a real etcd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controlplane.store.base import Check, ConfigStore, Delete, EventType, Put, WatchBatch
from controlplane.store.errors import Compacted, Conflict, LeadershipLost, LeaseLost
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election, LeaseKeeper
from tests.conftest import open_backend


async def collect(
    stream: AsyncIterator[WatchBatch], n_events: int, timeout_s: float = 5.0
) -> list[tuple[EventType, str, bytes, int]]:
    out: list[tuple[EventType, str, bytes, int]] = []
    async with asyncio.timeout(timeout_s):
        async for batch in stream:
            out += [(e.type, e.key, e.value, e.mod_revision) for e in batch.events]
            if len(out) >= n_events:
                break
    return out


async def test_put_get_list(store: ConfigStore, keys: KeySpace) -> None:
    a, b = keys.config("models", "a"), keys.config("models", "b")
    r1 = await store.put(a, b"1")
    r2 = await store.put(b, b"2")
    assert r2 > r1
    kv = await store.get(a)
    assert kv is not None and kv.value == b"1" and kv.mod_revision == r1 and kv.version == 1
    assert await store.get(keys.config("models", "missing")) is None
    listed = await store.list(keys.config_prefix("models"))
    assert [kv.key for kv in listed.items] == [a, b]
    assert listed.revision >= r2
    # a sibling prefix is not included
    await store.put(keys.config("modelsx", "c"), b"3")
    assert len((await store.list(keys.config_prefix("models"))).items) == 2


async def test_compare_and_set(store: ConfigStore, keys: KeySpace) -> None:
    k = keys.config("routes", "r")
    r1 = await store.put(k, b"v1", expected_revision=0)
    with pytest.raises(Conflict) as exc:
        await store.put(k, b"again", expected_revision=0)
    assert exc.value.actual == r1
    r2 = await store.put(k, b"v2", expected_revision=r1)
    with pytest.raises(Conflict):
        await store.put(k, b"stale", expected_revision=r1)
    kv = await store.get(k)
    assert kv is not None and kv.value == b"v2" and kv.mod_revision == r2 and kv.version == 2
    with pytest.raises(Conflict):
        await store.delete(k, expected_revision=r1)
    await store.delete(k, expected_revision=r2)
    assert await store.get(k) is None


async def test_commit_is_atomic_and_one_revision(store: ConfigStore, keys: KeySpace) -> None:
    a, b, c = (keys.config("models", n) for n in "abc")
    base = await store.put(c, b"c")
    rev = await store.commit([Put(a, b"a", 0), Put(b, b"b", 0), Check(c, base)])
    assert {kv.mod_revision for kv in (await store.list(keys.config_prefix())).items if kv.key != c} == {rev}
    # a failed precondition anywhere writes nothing at all
    with pytest.raises(Conflict) as exc:
        await store.commit([Put(a, b"a2", rev), Delete(b, rev), Put(keys.config("models", "d"), b"d", 0), Check(c, base + 1000)])
    assert exc.value.key == c
    assert (await store.get(a)).value == b"a"  # type: ignore[union-attr]
    assert await store.get(b) is not None
    assert await store.get(keys.config("models", "d")) is None
    with pytest.raises(ValueError):
        await store.commit([Put(a, b"x"), Delete(a)])


async def test_watch_from_revision_sees_every_change_in_order(store: ConfigStore, keys: KeySpace) -> None:
    prefix = keys.config_prefix()
    k = keys.config("models", "w")
    start = await store.put(k, b"0")
    revs = [await store.put(k, str(i).encode()) for i in range(1, 5)]
    await store.put(keys.status("node-1"), b"not watched")
    revs.append(await store.delete(k))
    events = await collect(store.watch(prefix, start_revision=start), 6)
    assert [e[3] for e in events] == [start, *revs]
    assert [e[0] for e in events] == [EventType.PUT] * 5 + [EventType.DELETE]
    assert [e[2] for e in events[:5]] == [b"0", b"1", b"2", b"3", b"4"]


async def test_watch_delivers_live_changes(store: ConfigStore, keys: KeySpace) -> None:
    prefix = keys.config_prefix()
    start = await store.current_revision() + 1
    stream = store.watch(prefix, start_revision=start)
    task = asyncio.create_task(collect(stream, 2))
    await asyncio.sleep(0.1)
    r1 = await store.put(keys.config("models", "live"), b"x")
    r2 = await store.commit([Put(keys.config("routes", "live"), b"y")])
    events = await task
    assert [e[3] for e in events] == [r1, r2]


@pytest.fixture(params=["memory", "etcd", "zookeeper"])
async def fresh_store(request: pytest.FixtureRequest) -> AsyncIterator[ConfigStore]:
    """A store nobody else uses (compaction is global)."""
    s = open_backend(request, request.param, etcd_fixture="own_etcd")
    yield s
    await s.close()


async def test_watch_before_compaction_raises_compacted(fresh_store: ConfigStore, keys: KeySpace) -> None:
    k = keys.config("models", "c")
    first = await fresh_store.put(k, b"1")
    for i in range(5):
        await fresh_store.put(k, str(i).encode())
    last = await fresh_store.current_revision()
    await fresh_store.compact(last)
    with pytest.raises(Compacted) as exc:
        await collect(fresh_store.watch(keys.config_prefix(), start_revision=first), 1)
    assert exc.value.compact_revision == last
    # watching from the compaction point still works
    r = await fresh_store.put(k, b"after")
    events = await collect(fresh_store.watch(keys.config_prefix(), start_revision=last), 2)
    assert events[-1][3] == r


async def test_lease_bound_keys_vanish_when_the_lease_dies(store: ConfigStore, keys: KeySpace) -> None:
    lease = await store.grant_lease(2)
    k = keys.node("n1")
    await store.put(k, b"alive", lease=lease)
    assert await store.keepalive(lease) >= 1
    await store.revoke_lease(lease)
    assert await store.get(k) is None
    with pytest.raises(LeaseLost):
        await store.keepalive(lease)
    with pytest.raises(LeaseLost):
        await store.put(k, b"late", lease=lease)


async def test_lease_expires_without_keepalive(store: ConfigStore, keys: KeySpace) -> None:
    lease = await store.grant_lease(1)
    k = keys.status("n2")
    await store.put(k, b"x", lease=lease)
    async with asyncio.timeout(6):
        while await store.get(k) is not None:  # noqa: ASYNC110 - polling a remote store, no local event to wait on
            await asyncio.sleep(0.1)
    keeper = LeaseKeeper(store, ttl_s=1)
    await keeper.set_key(k, b"again")
    first = keeper.lease_id
    await store.revoke_lease(first)  # simulate expiry
    await keeper.refresh_once()
    assert keeper.lease_id != first
    kv = await store.get(k)
    assert kv is not None and kv.value == b"again" and kv.lease == keeper.lease_id
    await keeper.close()


async def test_election_one_leader_and_handover(store: ConfigStore, keys: KeySpace) -> None:
    key = keys.election("autoscaler")
    a = Election(store, key, "a", ttl_s=5)
    b = Election(store, key, "b", ttl_s=5)
    assert await a.campaign_once()
    assert not await b.campaign_once()
    assert await b.leader() == "a"
    waiting = asyncio.create_task(b.campaign())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await a.resign()
    async with asyncio.timeout(5):
        await waiting
    assert await b.is_leader() and not await a.is_leader()
    await b.resign()


async def test_a_replaced_leader_cannot_write(store: ConfigStore, keys: KeySpace) -> None:
    """Fencing: a leader that paused past its lease (here: its lease revoked, as expiry would) and
    was replaced has every write refused, though it still believes it leads; the new one writes."""
    key, target = keys.election("autoscaler"), keys.placement("node-0")
    old = Election(store, key, "old", ttl_s=5)
    assert await old.campaign_once()
    await old.commit([Put(target, b"by old")])
    await store.revoke_lease(old.keeper.lease_id)  # it paused: its lease ran out
    new = Election(store, key, "new", ttl_s=5)
    assert await new.campaign_once()
    with pytest.raises(LeadershipLost):
        await old.commit([Put(target, b"stale")])
    await new.commit([Put(target, b"by new")])
    kv = await store.get(target)
    assert kv is not None and kv.value == b"by new"
    with pytest.raises(LeadershipLost):  # it knows now, and does not try again
        old.fence()
    await new.resign()


async def test_a_candidate_whose_lease_ran_out_while_waiting_still_campaigns(store: ConfigStore, keys: KeySpace) -> None:
    waiting = Election(store, keys.election("monitor"), "w", ttl_s=5)
    await waiting.keeper.ensure()
    await store.revoke_lease(waiting.keeper.lease_id)  # expired while another led
    assert await waiting.campaign_once() and await waiting.is_leader()
    await waiting.resign()


async def test_a_leader_that_cannot_renew_in_time_stops_acting(store: ConfigStore, keys: KeySpace) -> None:
    now = [0.0]
    leader = Election(store, keys.election("monitor"), "a", ttl_s=9, clock=lambda: now[0])
    assert await leader.campaign_once() and leader.deadline_s == 6
    assert leader.fence().key == keys.election("monitor")
    now[0] = 5.9
    await leader.keeper.refresh_once()  # renewed at 5.9: good until 11.9
    now[0] = 11.0
    leader.fence()
    now[0] = 12.0  # no renewal for more than its deadline (the store was away, or it was paused)
    with pytest.raises(LeadershipLost, match="within 6 s"):
        await leader.commit([Put(keys.placement("n"), b"x")])
    assert await store.get(keys.placement("n")) is None
    await leader.resign()
