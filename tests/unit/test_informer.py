"""Informer behaviour on the memory store: snapshots, handlers, and every re-list trigger."""

from __future__ import annotations

import asyncio

from controlplane.store.base import ConfigStore, Put, WatchBatch
from controlplane.store.informer import Informer, Snapshot, StreamEnd
from controlplane.store.memory import MemoryStore


async def test_lists_then_follows_changes_with_whole_snapshots() -> None:
    store = MemoryStore()
    await store.put("/p/a", b"1")
    informer = Informer(store, "/p/")
    seen: list[Snapshot] = []
    informer.add_handler(seen.append)
    task = asyncio.create_task(informer.run())
    await informer.wait_synced(2)
    assert dict((k, v.value) for k, v in informer.snapshot.items.items()) == {"/p/a": b"1"}
    rev = await store.commit([Put("/p/b", b"2"), Put("/p/a", b"3")])
    await store.put("/other", b"x")
    snap = await informer.wait_for_revision(rev, 2)
    assert {k: v.value for k, v in snap.items.items()} == {"/p/a": b"3", "/p/b": b"2"}
    assert seen[0].relisted and not seen[-1].relisted
    assert [e.mod_revision for e in seen[-1].changes] == [rev, rev]
    first = seen[0]
    assert "/p/b" not in first.items  # earlier snapshots are never mutated
    task.cancel()


async def test_a_failing_handler_does_not_stop_delivery() -> None:
    store = MemoryStore()
    informer = Informer(store, "/p/")

    def broken(_s: Snapshot) -> None:
        raise RuntimeError("boom")

    got: list[int] = []
    informer.add_handler(broken)
    informer.add_handler(lambda s: got.append(s.revision))
    task = asyncio.create_task(informer.run())
    await informer.wait_synced(2)
    rev = await store.put("/p/x", b"1")
    await informer.wait_for_revision(rev, 2)
    assert got[-1] == rev
    task.cancel()


async def test_compaction_while_disconnected_relists() -> None:
    store = MemoryStore()
    informer = Informer(store, "/p/")
    await store.put("/p/a", b"1")
    assert await informer.sync_once(max_batches=0) is StreamEnd.DONE  # listed, then "disconnected"
    await store.put("/p/b", b"2")
    await store.delete("/p/a")
    await store.compact(await store.current_revision())
    assert await informer.sync_once() is StreamEnd.COMPACTED
    await informer.sync_once(max_batches=0)
    assert set(informer.snapshot.items) == {"/p/b"}
    assert informer.stats.lists == 2


async def test_silent_stream_past_idle_bound_relists() -> None:
    store = MemoryStore(progress_interval_s=60)
    informer = Informer(store, "/p/", idle_timeout_s=0.2)
    assert await informer.sync_once() is StreamEnd.IDLE
    assert informer.stats.lists == 1
    await informer.sync_once(max_batches=0)
    assert informer.stats.lists == 2


class Restorable:
    """Delegates to a store that a test can swap for an older copy (a restore from backup)."""

    def __init__(self, inner: ConfigStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def watch(self, prefix: str, *, start_revision: int):  # type: ignore[no-untyped-def]
        return self.inner.watch(prefix, start_revision=start_revision)


async def test_revision_going_backwards_relists() -> None:
    new = MemoryStore(progress_interval_s=0.05)
    for i in range(10):
        await new.put("/p/a", str(i).encode())
    wrapper = Restorable(new)
    informer = Informer(wrapper, "/p/")  # type: ignore[arg-type]
    await informer.sync_once(max_batches=0)
    old = MemoryStore(progress_interval_s=0.05)
    await old.put("/p/a", b"restored")
    wrapper.inner = old
    assert await informer.sync_once() is StreamEnd.BACKWARDS
    await informer.sync_once(max_batches=0)
    assert informer.snapshot.items["/p/a"].value == b"restored"


async def test_events_older_than_position_are_treated_as_backwards() -> None:
    informer = Informer(MemoryStore(), "/p/")
    await informer.sync_once(max_batches=0)
    from controlplane.store.base import Event, EventType

    stale = WatchBatch((Event(EventType.PUT, "/p/x", b"", 0),), 1)
    assert informer._apply(stale) is StreamEnd.BACKWARDS


async def test_store_outage_backs_off_and_recovers() -> None:
    store = MemoryStore()
    informer = Informer(store, "/p/", max_backoff_s=0.05)
    store.available = False
    task = asyncio.create_task(informer.run())
    await asyncio.sleep(0.3)
    assert not informer.synced
    store.available = True
    rev = await store.put("/p/a", b"1")
    await informer.wait_for_revision(rev, 3)
    task.cancel()


async def test_an_unexpected_error_is_logged_and_the_informer_recovers() -> None:
    class Flaky(MemoryStore):
        calls = 0

        async def list(self, prefix: str):  # type: ignore[no-untyped-def]
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("a bug somewhere below")
            return await super().list(prefix)

    store = Flaky()
    rev = await store.put("/p/a", b"1")
    informer = Informer(store, "/p/", max_backoff_s=0.05)
    task = asyncio.create_task(informer.run())
    await informer.wait_for_revision(rev, 3)
    assert informer.stats.ends.get("failed") == 1
    task.cancel()
