"""In-process ConfigStore with etcd's semantics (revisions, compaction, leases) for unit tests."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from controlplane.store.base import (
    Delete,
    Event,
    EventType,
    KeyValue,
    ListResult,
    Op,
    Put,
    StoreBase,
    WatchBatch,
    check_ops,
)
from controlplane.store.errors import Compacted, Conflict, LeaseLost, StoreUnavailable

#: How often a waiting watcher re-checks lease expiry (leases expire lazily in this backend).
_EXPIRY_POLL_S = 0.05


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


class MemoryStore(StoreBase):
    """A single-process store. ``available=False`` simulates an outage (every call fails)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, progress_interval_s: float = 1.0) -> None:
        self._clock = clock
        self._progress_interval_s = progress_interval_s
        self._data: dict[str, KeyValue] = {}
        self._history: list[Event] = []
        self._revision = 1
        self._compacted = 0
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(1)
        self._tick = asyncio.Event()  # replaced after every commit; watchers wait on the current one
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory store is marked unavailable")
        self._expire()

    def _expire(self) -> None:
        now = self._clock()
        dead = [lid for lid, lease in self._leases.items() if lease.deadline <= now]
        for lid in dead:
            lease = self._leases.pop(lid)
            live = [k for k in sorted(lease.keys) if k in self._data and self._data[k].lease == lid]
            if live:
                self._apply([Delete(k) for k in live])

    def _apply(self, ops: Sequence[Put | Delete]) -> int:
        self._revision += 1
        rev = self._revision
        for op in ops:
            old = self._data.get(op.key)
            if isinstance(op, Put):
                self._data[op.key] = KeyValue(
                    key=op.key,
                    value=op.value,
                    mod_revision=rev,
                    create_revision=old.create_revision if old else rev,
                    version=(old.version + 1) if old else 1,
                    lease=op.lease,
                )
                if op.lease:
                    self._leases[op.lease].keys.add(op.key)
                self._history.append(Event(EventType.PUT, op.key, op.value, rev))
            elif old is not None:
                del self._data[op.key]
                self._history.append(Event(EventType.DELETE, op.key, b"", rev))
        self._tick.set()
        self._tick = asyncio.Event()
        return rev

    async def get(self, key: str) -> KeyValue | None:
        self._check()
        return self._data.get(key)

    async def list(self, prefix: str) -> ListResult:
        self._check()
        items = tuple(kv for k, kv in sorted(self._data.items()) if k.startswith(prefix))
        return ListResult(items, self._revision)

    async def commit(self, ops: Sequence[Op]) -> int:
        check_ops(ops)
        self._check()
        for op in ops:
            current = self._data.get(op.key)
            actual = current.mod_revision if current else None
            if op.expected_revision is not None and (actual or 0) != op.expected_revision:
                raise Conflict(op.key, expected=op.expected_revision, actual=actual)
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise LeaseLost(f"lease {op.lease} does not exist")
        writes = [op for op in ops if isinstance(op, Put | Delete)]
        if all(isinstance(op, Delete) and op.key not in self._data for op in writes):
            return self._revision  # changing nothing creates no revision (as in etcd)
        return self._apply(writes)

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchBatch]:
        self._check()
        if start_revision < self._compacted:
            raise Compacted(self._compacted)
        next_rev = start_revision
        last_sent = time.monotonic()
        while True:
            self._check()
            if next_rev < self._compacted:  # compacted under a slow watcher: etcd cancels it too
                raise Compacted(self._compacted)
            tick = self._tick
            # History is ordered by revision, so the watcher's position is a binary search away.
            pos = bisect.bisect_left(self._history, next_rev, key=lambda ev: ev.mod_revision)
            events = tuple(ev for ev in self._history[pos:] if ev.key.startswith(prefix))
            next_rev = self._revision + 1
            if events or time.monotonic() - last_sent >= self._progress_interval_s:
                # Like etcd's progress notifications, an empty batch says "nothing up to here".
                last_sent = time.monotonic()
                yield WatchBatch(events, self._revision)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_EXPIRY_POLL_S):  # not wait_for: it can swallow a cancellation on 3.11
                    await tick.wait()

    async def current_revision(self) -> int:
        self._check()
        return self._revision

    async def compact(self, revision: int) -> None:
        self._check()
        if revision > self._revision:
            raise ValueError(f"cannot compact beyond the current revision {self._revision}")
        self._compacted = max(self._compacted, revision)
        self._history = [ev for ev in self._history if ev.mod_revision >= revision]

    async def grant_lease(self, ttl_s: int) -> int:
        self._check()
        lid = next(self._lease_ids)
        self._leases[lid] = _Lease(ttl_s, self._clock() + ttl_s)
        return lid

    async def keepalive(self, lease_id: int) -> int:
        self._check()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseLost(f"lease {lease_id} expired or was revoked")
        lease.deadline = self._clock() + lease.ttl
        return lease.ttl

    async def revoke_lease(self, lease_id: int) -> None:
        self._check()
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.deadline = 0.0
            self._expire()

    async def close(self) -> None:
        return None
