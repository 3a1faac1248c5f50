"""Decoded read models of informer snapshots, shared by every consumer (control plane, agents,
router): ``ConfigView`` for desired configuration, ``decode_keyed`` for per-node keys.

Only changed keys are decoded on each snapshot, so a write validates against 10,000 objects
without listing or parsing them again. A stored configuration item that no longer validates is
logged and the last good value is kept (consumers validate again on read).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from controlplane.store.base import EventType, KeyValue
from controlplane.store.informer import Snapshot
from controlplane.store.keys import KeySpace
from schemas.common import ConfigObject
from schemas.registry import parse_object

log = logging.getLogger(__name__)
ObjectKey = tuple[str, str]
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Stored:
    obj: ConfigObject
    revision: int


def decode(value: bytes, revision: int) -> ConfigObject:
    return parse_object(json.loads(value)).with_revision(revision)


class ConfigView:
    """Decoded configuration at ``revision``; register ``on_snapshot`` with a config informer."""

    def __init__(self, keys: KeySpace) -> None:
        self._keys = keys
        self._dict: dict[ObjectKey, Stored] = {}  # replaced, never mutated, on each snapshot
        self.revision = 0
        self._changed = asyncio.Event()

    @property
    def state(self) -> Mapping[ObjectKey, Stored]:
        return MappingProxyType(self._dict)

    def get(self, kind: str, name: str, cls: type[T]) -> T | None:
        """The object ``kind/name`` when the view holds one of type ``cls``."""
        found = self._dict.get((kind, name))
        return found.obj if found is not None and isinstance(found.obj, cls) else None

    def _decode(self, kv: KeyValue, previous: Stored | None) -> Stored | None:
        try:
            return Stored(decode(kv.value, kv.mod_revision), kv.mod_revision)
        except (ValueError, ValidationError):
            log.error("invalid stored object %s at revision %d; keeping the last good value", kv.key, kv.mod_revision)
            return previous

    def on_snapshot(self, snapshot: Snapshot) -> None:
        state = self._dict.copy()
        if snapshot.relisted:
            fresh: dict[ObjectKey, Stored] = {}
            for kv in snapshot.items.values():
                key = self._keys.parse_config(kv.key)
                old = state.get(key)
                kept = old if old is not None and old.revision == kv.mod_revision else self._decode(kv, old)
                if kept is not None:
                    fresh[key] = kept
            state = fresh
        else:
            for ev in snapshot.changes:
                key = self._keys.parse_config(ev.key)
                if ev.type is EventType.DELETE:
                    state.pop(key, None)
                else:
                    kv = KeyValue(ev.key, ev.value, ev.mod_revision, 0, 0)
                    decoded = self._decode(kv, state.get(key))
                    if decoded is not None:
                        state[key] = decoded
        self._dict = state
        self.revision = snapshot.revision
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, revision: int, timeout_s: float) -> bool:
        """True once the view has reached ``revision``; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.revision < revision:
                    changed = self._changed
                    await changed.wait()
        except TimeoutError:
            return False
        return True


def decode_keyed(snapshot: Snapshot, cls: type[T], previous: dict[str, T]) -> tuple[dict[str, T], list[str]]:
    """Values by the key's last segment (a node name), and the names decoded again: only keys the
    snapshot changed (a status write per node per change would otherwise decode the whole fleet)."""
    if snapshot.relisted:
        out: dict[str, T] = {}
        keys = list(snapshot.items)
    else:
        out = previous.copy()
        keys = [ev.key for ev in snapshot.changes]
    nodes = [key.rsplit("/", 1)[-1] for key in keys]
    for key, node in zip(keys, nodes, strict=True):
        kv = snapshot.items.get(key)
        if kv is None:
            out.pop(node, None)
            continue
        try:
            out[node] = cls.model_validate_json(kv.value)
        except ValidationError:
            log.error("ignoring unreadable %s at %s", cls.__name__, key)
            out.pop(node, None)
    return out, nodes
