"""The admission queue: a request whose every candidate node is at its in-flight limit waits for a
slot instead of failing, in a bounded queue per model, by its key's priority class (high, normal,
low) and first come first served within a class. A slot freed on a node wakes the first waiter of
the models that node holds, at once (no polling); the woken request decides again, and goes back
to its place if another took the slot first. Past the route's ``queue.max_wait_ms`` or
``max_depth``: QueueRefused (503 with Retry-After). A client that leaves while queued is removed."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge, Histogram

PRIORITY = {"high": 0, "normal": 1, "low": 2}


class QueueRefused(Exception):
    """The queue was full, or the wait ran out (503)."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(order=True)
class _Waiter:
    rank: int
    seq: int
    wake: asyncio.Future[None] = field(compare=False)
    taken: bool = field(default=False, compare=False)  # woken or gone: other models' heaps skip it
    since: float = field(default=0.0, compare=False)  # monotonic time it started waiting


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One model's queue since the last reading: waiting now, the longest wait (ended or still
    going), and the requests refused for want of a slot (queue full or wait ran out)."""

    waiting: int
    longest_wait_s: float
    refused: int


class AdmissionQueue:
    def __init__(self, *, registry: CollectorRegistry, models_of: Callable[[str], Sequence[str]] = lambda _n: ()) -> None:
        """``models_of(node)``: the models a node holds (a freed slot there may serve any of them)."""
        self._heaps: dict[str, list[_Waiter]] = {}
        self._depth: dict[tuple[str, str], int] = {}
        self._seq = itertools.count()
        self._models_of = models_of
        self._longest: dict[str, float] = {}  # per model, the longest wait ended since the last reading
        self._refused: dict[str, int] = {}  # per model, since the start
        self.depth = Gauge("llmtune_router_queue_depth", "Requests waiting for a slot", ["model", "priority"], registry=registry)
        self.waited = Histogram(
            "llmtune_router_queue_wait_seconds", "Time requests waited for a slot (admitted or not)", ["model", "priority"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry,
        )  # fmt: skip

    def waiting(self, model: str) -> int:
        return sum(n for (m, _), n in self._depth.items() if m == model)

    async def wait(self, models: Sequence[str], priority: str, *, deadline: float, max_depth: int, seq: int | None = None) -> int:
        """Wait until a slot of one of ``models`` may be free (or QueueRefused); returns the
        waiter's sequence number, to keep its place when it must wait again."""
        if max_depth <= 0 or any(self.waiting(m) >= max_depth for m in models):
            self._refuse(models)
            raise QueueRefused(f"{max(max_depth, 0)} requests already wait for {', '.join(models)}; retry shortly")
        left = deadline - time.monotonic()
        if left <= 0:
            self._refuse(models)
            raise QueueRefused("no slot came free in time; retry shortly")
        seq = next(self._seq) if seq is None else seq
        started = time.monotonic()
        waiter = _Waiter(PRIORITY.get(priority, 1), seq, asyncio.get_running_loop().create_future(), since=started)
        for model in models:
            heapq.heappush(self._heaps.setdefault(model, []), waiter)
            self._count(model, priority, 1)
        try:
            async with asyncio.timeout(left):
                await waiter.wake
        except TimeoutError:
            self._refuse(models)
            raise QueueRefused("no slot came free in time; retry shortly") from None
        finally:
            woken = waiter.taken
            waiter.taken = True
            waited = time.monotonic() - started
            for model in models:
                self._count(model, priority, -1)
                self.waited.labels(model, priority).observe(waited)
                self._longest[model] = max(self._longest.get(model, 0.0), waited)
                heap = self._heaps.get(model)
                if not woken and heap and waiter in heap:  # timed out or the client left: out of every heap now
                    heap.remove(waiter)
                    heapq.heapify(heap)
        return seq

    def _refuse(self, models: Sequence[str]) -> None:
        for model in models:
            self._refused[model] = self._refused.get(model, 0) + 1

    def figures(self) -> dict[str, QueueFigures]:
        """Per model with anything to say: its queue now, the longest wait since the last call
        (waits still going count), and its refusals since the start (a reader takes differences)."""
        now, out = time.monotonic(), {}
        for model in {*self._heaps, *self._longest, *self._refused}:
            live = [now - w.since for w in self._heaps.get(model, ()) if not w.taken]
            longest = max([self._longest.get(model, 0.0), *live])
            if live or longest or self._refused.get(model):
                out[model] = QueueFigures(len(live), round(longest, 3), self._refused.get(model, 0))
        self._longest.clear()
        return out

    def _count(self, model: str, priority: str, delta: int) -> None:
        key = (model, priority)
        self._depth[key] = self._depth.get(key, 0) + delta
        self.depth.labels(model, priority).set(self._depth[key])

    def wake(self, model: str, count: int) -> None:
        """Up to ``count`` waiters of ``model`` may find a slot now (its first replica came up)."""
        heap = self._heaps.get(model)
        while heap and count > 0:
            waiter = heapq.heappop(heap)
            if not waiter.taken and not waiter.wake.done():
                waiter.taken = True
                waiter.wake.set_result(None)
                count -= 1

    def freed(self, model: str, node: str) -> None:
        """A slot came free on ``node``: wake the first waiter of ``model``, else of another model the node holds."""
        for candidate in (model, *self._models_of(node)):
            heap = self._heaps.get(candidate)
            while heap:
                waiter = heapq.heappop(heap)
                if not waiter.taken and not waiter.wake.done():
                    waiter.taken = True
                    waiter.wake.set_result(None)
                    return
