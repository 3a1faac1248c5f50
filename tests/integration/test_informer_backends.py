"""The informer against each real backend (etcd and ZooKeeper): restart mid catch-up, compaction
while away, concurrent compare-and-set. One scenario, run on both."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from controlplane.store.base import ConfigStore, Put
from controlplane.store.errors import Conflict
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.informer import Informer, Snapshot
from controlplane.store.keys import KeySpace
from controlplane.store.zookeeper import ZooKeeperConfig, ZooKeeperStore
from tests.fixtures.services import EtcdServer, ServerProcess, ZooKeeperServer


@pytest.fixture(params=["etcd", "zookeeper"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ServerProcess, ConfigStore]]:
    """A server of the test's own (it may be restarted or compacted) and a store client on it."""
    if request.param == "etcd":
        etcd: EtcdServer = request.getfixturevalue("own_etcd")
        server: ServerProcess = etcd
        store: ConfigStore = EtcdStore(EtcdConfig(endpoints=(etcd.url,), timeout_s=2))
    else:
        zk: ZooKeeperServer = request.getfixturevalue("own_zookeeper")
        server = zk
        store = ZooKeeperStore(ZooKeeperConfig(hosts=zk.hosts, root=f"/t{uuid.uuid4().hex[:10]}", progress_interval_s=0.5))
    yield server, store
    await store.close()


async def _write_revisions(store: ConfigStore, keys: KeySpace, n: int) -> list[int]:
    """``n`` revisions: single puts, multi-key commits and deletes over 50 keys."""
    revs: list[int] = []
    for i in range(n):
        k = keys.config("models", f"m{i % 50}")
        if i % 10 == 9:
            revs.append(await store.commit([Put(k, f"v{i}".encode()), Put(keys.config("routes", f"r{i % 7}"), f"r{i}".encode())]))
        elif i % 17 == 16:
            revs.append(await store.delete(k))
        else:
            revs.append(await store.put(k, f"v{i}".encode()))
    return revs


async def test_restart_during_catch_up_loses_and_repeats_nothing(
    backend: tuple[ServerProcess, ConfigStore], keys: KeySpace
) -> None:
    server, store = backend
    informer = Informer(store, keys.config_prefix(), max_backoff_s=0.2)
    await informer.sync_once(max_batches=0)  # listed (empty); now it is "away"
    revs = sorted(set(await _write_revisions(store, keys, 1200)))  # deletes of missing keys make no revision

    observed: list[int] = []
    restarted = asyncio.Event()

    async def observer(snapshot: Snapshot) -> None:
        for ev in snapshot.changes:
            if not observed or observed[-1] != ev.mod_revision:
                observed.append(ev.mod_revision)
        if not restarted.is_set() and len(observed) >= 200:
            restarted.set()
            await asyncio.to_thread(server.stop)  # mid catch-up: the stream dies under us
            await asyncio.to_thread(server.start)

    informer.add_handler(observer)
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_for_revision(revs[-1], 60)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert restarted.is_set(), "the catch-up finished before the restart could happen"
    assert len(observed) > 200
    assert informer.stats.resumes >= 1 and informer.stats.lists == 1  # resumed, never re-listed
    assert observed == revs  # every revision once, in order
    listed = await store.list(keys.config_prefix())
    assert {k: (v.value, v.mod_revision) for k, v in informer.snapshot.items.items()} == {
        kv.key: (kv.value, kv.mod_revision) for kv in listed.items
    }


async def test_compaction_while_disconnected_converges_by_relisting(
    backend: tuple[ServerProcess, ConfigStore], keys: KeySpace
) -> None:
    _, store = backend
    await _write_revisions(store, keys, 100)
    informer = Informer(store, keys.config_prefix())
    await informer.sync_once(max_batches=0)
    await _write_revisions(store, keys, 300)
    await store.delete(keys.config("models", "m0"))
    await store.compact(await store.current_revision())
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_for_revision(await store.current_revision(), 10)
    finally:
        task.cancel()
    assert informer.stats.lists == 2 and informer.stats.ends.get("compacted") == 1
    listed = await store.list(keys.config_prefix())
    assert {k: v.value for k, v in informer.snapshot.items.items()} == {kv.key: kv.value for kv in listed.items}
    assert keys.config("models", "m0") not in informer.snapshot.items


async def test_twenty_concurrent_cas_writers_lose_no_update(backend: tuple[ServerProcess, ConfigStore], keys: KeySpace) -> None:
    _, store = backend
    key = keys.config("models", "counter")
    await store.put(key, b"0")
    informer = Informer(store, keys.config_prefix())
    task = asyncio.create_task(informer.run())
    conflicts = 0
    per_writer = 10

    async def writer() -> None:
        nonlocal conflicts
        done = 0
        while done < per_writer:
            kv = await store.get(key)
            assert kv is not None
            try:
                await store.put(key, str(int(kv.value) + 1).encode(), expected_revision=kv.mod_revision)
                done += 1
            except Conflict:
                conflicts += 1

    await asyncio.gather(*(writer() for _ in range(20)))
    final = await store.get(key)
    assert final is not None and int(final.value) == 20 * per_writer
    assert conflicts > 0  # with 20 writers on one key, losers must have been told
    snap = await informer.wait_for_revision(final.mod_revision, 5)
    assert snap.items[key].value == final.value
    task.cancel()
