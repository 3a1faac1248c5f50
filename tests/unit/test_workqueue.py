"""The agent's work queue: an item waiting is queued once, a scheduled item keeps one timer, and
``forget`` drops it (the worker is doing it now)."""

from __future__ import annotations

import asyncio

from agents.sidecar.workqueue import Work, WorkQueue


async def test_items_wait_once_in_order() -> None:
    queue = WorkQueue()
    for item in (Work.RECONCILE, Work.PROBE, Work.RECONCILE, Work.RECONCILE):
        queue.add(item)
    assert [await queue.get(), await queue.get()] == [Work.RECONCILE, Work.PROBE]
    assert not queue.pending(Work.RECONCILE)
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # nothing queued: the worker waits
    queue.add(Work.PROBE)
    assert await asyncio.wait_for(waiting, 1) is Work.PROBE


async def test_a_scheduled_item_keeps_one_timer_and_can_be_forgotten() -> None:
    queue = WorkQueue()
    queue.add_after(Work.RECONCILE, 10)
    queue.add_after(Work.RECONCILE, 0.02)  # in place of the first: due in 20 ms, once
    assert await asyncio.wait_for(queue.get(), 1) is Work.RECONCILE
    await asyncio.sleep(0.05)
    assert not queue.pending(Work.RECONCILE)
    queue.add_after(Work.PROBE, 0.02)
    queue.forget(Work.PROBE)
    await asyncio.sleep(0.05)
    assert not queue.pending(Work.PROBE)
    queue.add_after(Work.PROBE, 0.01)
    queue.close()
    await asyncio.sleep(0.03)
    assert not queue.pending(Work.PROBE)
