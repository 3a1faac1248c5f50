"""The config informer keeps its last good snapshot when the store lost its history (epochs)."""

from __future__ import annotations

from controlplane.store import epoch as epochs
from controlplane.store.informer import Informer, StreamEnd
from controlplane.store.keys import KeySpace
from controlplane.store.memory import MemoryStore

KEYS = KeySpace("t")


async def relist(informer: Informer) -> StreamEnd:
    informer._next_rev = None  # what a broken, compacted or backwards stream leads to
    return await informer.sync_once(max_batches=0)


async def test_a_store_that_lost_its_history_is_held_until_it_is_whole() -> None:
    store = MemoryStore()
    first = epochs.Epoch.new()
    await store.put(KEYS.epoch(), first.encode())
    await store.put(KEYS.config("models", "a"), b'{"kind": "Model"}')
    informer = Informer(store, KEYS.config_prefix(), epoch_key=KEYS.epoch(), hold_poll_s=0.01)
    assert await informer.sync_once(max_batches=0) is StreamEnd.DONE
    good = informer.snapshot
    assert list(good.items) == [KEYS.config("models", "a")] and informer.held is None

    # wiped: no epoch any more, no objects
    await store.delete(KEYS.config("models", "a"))
    await store.delete(KEYS.epoch())
    assert await relist(informer) is StreamEnd.HELD
    assert informer.snapshot is good and "lost its data" in (informer.held or "")

    # the control plane finds it behind: a new epoch, still not whole
    behind = epochs.Epoch.new("behind", "the store has no epoch")
    await store.put(KEYS.epoch(), behind.encode())
    assert await relist(informer) is StreamEnd.HELD and "behind the audit log" in (informer.held or "")

    # restored (the objects and the epoch ok, in one revision): published again
    kv = await store.get(KEYS.epoch())
    assert kv is not None
    await store.put(KEYS.config("models", "a"), b'{"kind": "Model", "v": 2}')
    await store.put(KEYS.epoch(), behind.with_state("ok").encode(), expected_revision=kv.mod_revision)
    assert await relist(informer) is StreamEnd.DONE
    assert informer.held is None and informer.snapshot.items[KEYS.config("models", "a")].value.endswith(b"2}")


async def test_revisions_that_go_back_in_one_epoch_are_held() -> None:
    store = MemoryStore()
    await store.put(KEYS.epoch(), epochs.Epoch.new().encode())
    for i in range(3):
        await store.put(KEYS.config("models", f"m{i}"), b"{}")
    informer = Informer(store, KEYS.config_prefix(), epoch_key=KEYS.epoch(), hold_poll_s=0.01)
    await informer.sync_once(max_batches=0)
    older = MemoryStore()  # the same epoch key (a snapshot taken earlier), fewer revisions
    kv = await store.get(KEYS.epoch())
    assert kv is not None
    await older.put(KEYS.epoch(), kv.value)
    informer._store = older
    assert await relist(informer) is StreamEnd.HELD and "went back from revision 5 to 2" in (informer.held or "")


async def test_without_an_epoch_key_nothing_is_held() -> None:
    store = MemoryStore()
    await store.put(KEYS.config("models", "a"), b"{}")
    informer = Informer(store, KEYS.config_prefix())
    await informer.sync_once(max_batches=0)
    await store.delete(KEYS.config("models", "a"))
    assert await relist(informer) is StreamEnd.DONE and dict(informer.snapshot.items) == {}
