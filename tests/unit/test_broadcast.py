"""A /watch subscriber that stops reading hurts only itself."""

from __future__ import annotations

import asyncio

from controlplane.api.broadcast import QUEUE_LIMIT, Broadcaster
from controlplane.store.base import Event, EventType
from controlplane.store.informer import Snapshot
from controlplane.store.keys import KeySpace

KEYS = KeySpace("t")


def change(revision: int) -> Snapshot:
    key = KEYS.config("models", f"m{revision}")
    return Snapshot(revision, {}, changes=(Event(EventType.PUT, key, b'{"kind": "Model"}', revision),))


async def test_a_slow_subscriber_gets_a_resync_and_the_others_every_change() -> None:
    hub = Broadcaster(KEYS)
    slow, fast = hub.subscribe(revision=0), hub.subscribe(revision=0)
    assert (await anext(slow))["event"] == (await anext(fast))["event"] == "hello"
    got: list[str] = []

    async def read() -> None:
        async for msg in fast:
            got.append(msg["event"])
            if len(got) == QUEUE_LIMIT + 4:
                return

    reader = asyncio.create_task(read())
    for revision in range(1, QUEUE_LIMIT + 5):
        hub.publish(change(revision))  # never raises, whoever stops reading
        if revision % 100 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(reader, 5)
    assert got == ["change"] * (QUEUE_LIMIT + 4)
    first = await anext(slow)
    assert first["event"] == "resync"  # what it missed is gone: it re-reads
    await slow.aclose()
    await fast.aclose()
