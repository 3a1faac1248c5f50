"""Liveness keys bound to a lease, and leader election, built on ConfigStore primitives alone.

Backend-neutral: etcd maps a lease to its lease API, the memory store emulates it, and the
ZooKeeper backend maps it to a session of its own whose expiry deletes the bound keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from controlplane.store.base import ConfigStore, EventType, Put
from controlplane.store.errors import Conflict, LeaseLost, StoreError

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Holds one lease and the keys bound to it; after the lease is lost it re-creates both."""

    def __init__(self, store: ConfigStore, *, ttl_s: int = 10) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._keys: dict[str, bytes] = {}
        self.lease_id = 0

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
            self.lease_id = await self._store.grant_lease(self._ttl_s)
            if self._keys:
                await self._store.commit([Put(k, v, lease=self.lease_id) for k, v in self._keys.items()])
        return self.lease_id

    async def refresh_once(self) -> None:
        """Keep the lease alive; if it was lost (expiry, store restore), start over."""
        if self.lease_id:
            try:
                await self._store.keepalive(self.lease_id)
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


class Election:
    """Leader election: the first candidate to create ``key`` (bound to its lease) leads."""

    def __init__(self, store: ConfigStore, key: str, candidate: str, *, ttl_s: int = 10) -> None:
        self._store = store
        self._key = key
        self.candidate = candidate
        self.keeper = LeaseKeeper(store, ttl_s=ttl_s)

    async def campaign_once(self) -> bool:
        """Try to become leader now; True when this candidate holds the key."""
        lease = await self.keeper.ensure()
        try:
            await self._store.put(self._key, self.candidate.encode(), expected_revision=0, lease=lease)
        except Conflict:
            return await self.is_leader()
        return True

    async def is_leader(self) -> bool:
        kv = await self._store.get(self._key)
        return kv is not None and kv.value == self.candidate.encode() and kv.lease == self.keeper.lease_id

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
        kv = await self._store.get(self._key)
        if kv is not None and kv.value == self.candidate.encode():
            with contextlib.suppress(Conflict):
                await self._store.delete(self._key, expected_revision=kv.mod_revision)
        await self.keeper.close()
