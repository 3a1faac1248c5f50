"""Liveness keys bound to a lease, and leader election with fencing, built on ConfigStore
primitives alone: a leader's writes carry its fencing token (the election key's revision when it
won), so a leader that paused past its lease and was replaced cannot write any more.

Backend-neutral: etcd maps a lease to its lease API, the memory store emulates it, and the
ZooKeeper backend maps it to a session of its own whose expiry deletes the bound keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controlplane.store.base import Check, ConfigStore, EventType, Op, Put
from controlplane.store.errors import Conflict, LeadershipLost, LeaseLost, StoreError

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Holds one lease and the keys bound to it; after the lease is lost it re-creates both."""

    def __init__(self, store: ConfigStore, *, ttl_s: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._keys: dict[str, bytes] = {}
        self._clock = clock
        self.lease_id = 0
        self.renewed_at = -float("inf")  # when the store last confirmed the lease (clock's time)

    async def set_key(self, key: str, value: bytes) -> None:
        """Bind ``key`` to the lease (written now, and again whenever the lease is re-created); a
        lease found lost on the way is re-created with every bound key."""
        self._keys[key] = value
        if self.lease_id:
            try:
                await self._store.put(key, value, lease=self.lease_id)
                return
            except LeaseLost:
                log.warning("lease %d lost; re-creating %d key(s)", self.lease_id, len(self._keys))
                self.lease_id = 0
        await self.ensure()

    async def ensure(self) -> int:
        """Grant a lease if none is held and (re)write every bound key under it."""
        if not self.lease_id:
            asked = self._clock()
            self.lease_id = await self._store.grant_lease(self._ttl_s)
            self.renewed_at = asked
            if self._keys:
                await self._store.commit([Put(k, v, lease=self.lease_id) for k, v in self._keys.items()])
        return self.lease_id

    async def refresh_once(self) -> None:
        """Keep the lease alive; if it was lost (expiry, store restore), start over."""
        if self.lease_id:
            try:
                asked = self._clock()  # the lease runs from when the refresh was asked, not answered
                await self._store.keepalive(self.lease_id)
                self.renewed_at = asked
                return
            except LeaseLost:
                log.warning("lease %d lost; re-creating %d key(s)", self.lease_id, len(self._keys))
                self.lease_id = 0
        await self.ensure()

    async def run(self, *, iterations: int | None = None) -> None:
        """Refresh at a third of the TTL forever; store outages are logged and retried."""
        done = 0
        while iterations is None or done < iterations:
            try:
                await self.refresh_once()
            except StoreError as exc:
                log.warning("lease keeper: %s", exc)
            done += 1
            await asyncio.sleep(self._ttl_s / 3)

    async def close(self) -> None:
        if self.lease_id:
            await self._store.revoke_lease(self.lease_id)
            self.lease_id = 0


@dataclass(frozen=True, slots=True)
class Fence:
    """A leader's fencing token: its election key and the revision that key was created at. A
    write that carries it (``check``) commits only while that same key still stands."""

    key: str
    revision: int

    def check(self) -> Check:
        return Check(self.key, self.revision)


class Election:
    """Leader election: the first candidate to create ``key`` (bound to its lease) leads, until its
    lease ends. It acts only while its lease was renewed within ``deadline_s`` (below the TTL, so it
    stops before another can take over) and writes only through ``commit`` or with its ``fence()``."""

    def __init__(
        self, store: ConfigStore, key: str, candidate: str, *, ttl_s: int = 10, deadline_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._store = store
        self._key = key
        self.candidate = candidate
        self.keeper = LeaseKeeper(store, ttl_s=ttl_s, clock=clock)
        self.deadline_s = ttl_s * 2 / 3 if deadline_s is None else deadline_s
        self._clock = clock
        self._fence: Fence | None = None
        self._lease = 0  # the lease it won the lead with: a new lease (the old one ended) is not the lead

    async def campaign_once(self) -> bool:
        """Try to become leader now; True when this candidate holds the key."""
        lease = await self.keeper.ensure()
        try:
            revision = await self._store.put(self._key, self.candidate.encode(), expected_revision=0, lease=lease)
        except Conflict:
            return await self.is_leader()
        except LeaseLost:  # its lease ran out while it waited to lead (nothing refreshes it then): a new one
            self.keeper.lease_id = 0
            return await self.campaign_once()
        self._fence, self._lease = Fence(self._key, revision), lease
        return True

    async def is_leader(self) -> bool:
        kv = await self._store.get(self._key)
        leads = kv is not None and kv.value == self.candidate.encode() and kv.lease == self.keeper.lease_id
        self._fence = Fence(self._key, kv.mod_revision) if leads and kv is not None else None
        self._lease = self.keeper.lease_id
        return leads

    def fence(self) -> Fence:
        """The fencing token to write with; LeadershipLost when this candidate does not lead or has
        not renewed its lease within its deadline (then it must stop acting)."""
        if self._fence is None:
            raise LeadershipLost(f"{self.candidate} does not lead {self._key}")
        if self.keeper.lease_id != self._lease:
            self._fence = None
            raise LeadershipLost(f"{self.candidate}: the lease it led with ended (it was paused or cut off): it stops leading")
        if self._clock() - self.keeper.renewed_at > self.deadline_s:
            self._fence = None
            raise LeadershipLost(f"{self.candidate} could not renew its lease within {self.deadline_s:g} s: it stops leading")
        return self._fence

    async def commit(self, ops: Sequence[Op]) -> int:
        """``ops`` as one revision, only while this candidate still leads (LeadershipLost otherwise)."""
        fence = self.fence()
        try:
            return await self._store.commit([fence.check(), *ops])
        except Conflict as exc:
            if exc.key != fence.key:
                raise
            self._fence = None
            raise LeadershipLost(f"{self.candidate} no longer leads {self._key}: its write was refused") from exc

    async def leader(self) -> str | None:
        kv = await self._store.get(self._key)
        return kv.value.decode() if kv else None

    async def campaign(self) -> None:
        """Return once this candidate leads; between tries, wait for the leader's key to vanish."""
        while not await self.campaign_once():
            kv = await self._store.get(self._key)
            if kv is None:
                continue
            async for batch in self._store.watch(self._key, start_revision=kv.mod_revision + 1):
                if any(ev.type is EventType.DELETE and ev.key == self._key for ev in batch.events):
                    break

    async def resign(self) -> None:
        self._fence = None
        kv = await self._store.get(self._key)
        if kv is not None and kv.value == self.candidate.encode():
            with contextlib.suppress(Conflict):
                await self._store.delete(self._key, expected_revision=kv.mod_revision)
        await self.keeper.close()
