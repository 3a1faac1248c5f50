"""The agent's work queue (client-go's ``workqueue`` for one worker): informer events, placement
changes and timers only put work here; one worker takes it. An item waiting is not queued twice,
and an item scheduled for later (``add_after``) keeps one timer, so a burst of events makes one
pass, not one per event."""

from __future__ import annotations

import asyncio
import enum


class Work(enum.Enum):
    RECONCILE = "reconcile"  # bring the node to the desired state (and publish the status)
    PROBE = "probe"  # look at Ollama (and publish the status)


class WorkQueue:
    def __init__(self) -> None:
        self._items: list[Work] = []
        self._ready = asyncio.Event()
        self._timers: dict[Work, asyncio.TimerHandle] = {}

    def add(self, item: Work) -> None:
        """Queue ``item`` now (a no-op while it waits already)."""
        if item not in self._items:
            self._items.append(item)
            self._ready.set()

    def add_after(self, item: Work, delay_s: float) -> None:
        """Queue ``item`` in ``delay_s`` seconds, in place of any time it was scheduled for before."""
        self.forget(item)
        self._timers[item] = asyncio.get_running_loop().call_later(delay_s, self._due, item)

    def _due(self, item: Work) -> None:
        self._timers.pop(item, None)
        self.add(item)

    def forget(self, item: Work) -> None:
        """Drop ``item``'s timer (it is being done now)."""
        timer = self._timers.pop(item, None)
        if timer is not None:
            timer.cancel()

    def pending(self, item: Work) -> bool:
        return item in self._items

    async def get(self) -> Work:
        """The oldest waiting item, once there is one."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.pop(0)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
