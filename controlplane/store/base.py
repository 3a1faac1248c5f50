"""The ConfigStore protocol and its value types, shared by every backend (etcd, memory, ZooKeeper).

Revisions are global and only grow: every committed change set gets exactly one new revision.
``expected_revision`` on a write means: ``None`` — unconditional, ``0`` — the key must not exist,
``n`` — the key's ``mod_revision`` must be ``n``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class ListResult:
    items: tuple[KeyValue, ...]
    revision: int  # the store revision the list was read at


class EventType(Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events of one or more whole revisions, in order; no events means a progress notification."""

    events: tuple[Event, ...]
    header_revision: int


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    expected_revision: int | None = None
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """A precondition only: the commit fails unless ``key`` is at ``expected_revision`` (0 = absent)."""

    key: str
    expected_revision: int


Op = Put | Delete | Check


@runtime_checkable
class ConfigStore(Protocol):
    """What every backend offers. All methods raise ``StoreUnavailable`` when the backend is down."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(self, prefix: str) -> ListResult: ...

    async def commit(self, ops: Sequence[Op]) -> int:
        """Apply ``ops`` atomically as one revision and return it; ``Conflict`` if a precondition fails."""
        ...

    async def put(self, key: str, value: bytes, *, expected_revision: int | None = None, lease: int = 0) -> int: ...

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int: ...

    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchBatch]:
        """Changes under ``prefix`` from ``start_revision`` on; ``Compacted`` when that is gone."""
        ...

    async def current_revision(self) -> int: ...

    async def compact(self, revision: int) -> None: ...

    async def grant_lease(self, ttl_s: int) -> int: ...

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; returns its TTL in seconds, raises ``LeaseLost`` when it is gone."""
        ...

    async def revoke_lease(self, lease_id: int) -> None: ...

    async def close(self) -> None: ...


class StoreBase:
    """Shared conveniences expressed through ``commit`` so that each backend implements them once."""

    async def commit(self, ops: Sequence[Op]) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    async def put(self, key: str, value: bytes, *, expected_revision: int | None = None, lease: int = 0) -> int:
        return await self.commit([Put(key, value, expected_revision, lease)])

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int:
        return await self.commit([Delete(key, expected_revision)])


def check_ops(ops: Sequence[Op]) -> None:
    """Reject an empty change set or one that touches a key twice (ambiguous in one revision)."""
    if not ops:
        raise ValueError("a commit needs at least one operation")
    keys = [op.key for op in ops]
    if len(set(keys)) != len(keys):
        raise ValueError("a commit touches the same key twice")
