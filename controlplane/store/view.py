"""Decoded read models of informer snapshots, shared by every consumer (control plane, agents,
router): ``ConfigView`` for desired configuration, ``decode_keyed`` for per-node keys.

Only changed keys are decoded on each snapshot, so a write validates against 10,000 objects
without listing or parsing them again. A stored configuration item that does not validate (bytes
another writer put there, a newer or older service's document, a restore) is an ``InvalidObject``:
consumers keep its last good value, and the view says which items are invalid and why, so that
status, readiness and metrics can name them and the write path can repair them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controlplane.store.base import EventType, KeyValue
from controlplane.store.informer import Snapshot
from controlplane.store.keys import KeySpace
from schemas.common import ConfigObject
from schemas.registry import KINDS, parse_object

log = logging.getLogger(__name__)
ObjectKey = tuple[str, str]
T = TypeVar("T", bound=BaseModel)
#: Stored text kept per invalid item (a store value may be up to etcd's 1.5 MiB request limit).
MAX_RAW_CHARS = 65_536
_MAX_ERRORS = 5


@dataclass(frozen=True, slots=True)
class Stored:
    obj: ConfigObject
    revision: int
    raw: bytes = b""  # the stored bytes it was decoded from (a re-list keeps it only if they match)


@dataclass(frozen=True, slots=True)
class InvalidObject:
    """A stored configuration item that does not validate: where, since when, what, and why."""

    key: str
    kind: str
    name: str
    revision: int
    raw: str  # the stored text (cut at MAX_RAW_CHARS)
    error: str

    @property
    def document(self) -> dict[str, Any]:
        """The stored document for an audit row's ``before``: its JSON object, else the raw text."""
        try:
            doc = json.loads(self.raw)
        except ValueError:
            doc = None
        return doc if isinstance(doc, dict) else {"raw": self.raw}

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "name": self.name, "revision": self.revision, "error": self.error}


class StoredInvalid(Exception):
    """The store holds bytes at a configuration key that do not validate."""

    def __init__(self, item: InvalidObject) -> None:
        self.item = item
        super().__init__(f"{item.kind}/{item.name} at revision {item.revision} does not validate: {item.error}")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in exc.errors()[:_MAX_ERRORS]]
        more = exc.error_count() - _MAX_ERRORS
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return str(exc)


def decode(value: bytes, revision: int) -> ConfigObject:
    return parse_object(json.loads(value)).with_revision(revision)


def addressable(keys: KeySpace, invalid: Mapping[str, InvalidObject]) -> dict[ObjectKey, InvalidObject]:
    """The invalid items that stand at an object's own key, by ``(kind, name)``: those a write
    of that object replaces (an item at a malformed path is repaired only by removing it)."""
    return {(b.kind, b.name): b for key, b in invalid.items() if keys.config(b.kind, b.name) == key}


def decode_at(keys: KeySpace, kv: KeyValue) -> ConfigObject:
    """The object stored at ``kv``; ``StoredInvalid`` when the bytes, the key or the two together
    are not a valid configuration object (a Route stored under models/, a name that differs)."""
    kind, name = keys.split_config(kv.key)
    try:
        kind, name = keys.parse_config(kv.key)
        if kind not in KINDS:
            raise ValueError(f"unknown kind '{kind}' in the key (known: {', '.join(KINDS)})")
        obj = decode(kv.value, kv.mod_revision)
        if type(obj).plural != kind or obj.name != name:
            raise ValueError(f"the key names {kind}/{name} but the document is {type(obj).plural}/{obj.name}")
    except (ValueError, ValidationError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raw = kv.value.decode(errors="replace")[:MAX_RAW_CHARS]
        raise StoredInvalid(InvalidObject(kv.key, kind, name, kv.mod_revision, raw, _describe(exc))) from exc
    return obj


class ConfigView:
    """Decoded configuration at ``revision``; register ``on_snapshot`` with a config informer.

    ``state`` is what consumers act on: every valid object, and the last good value of an item
    that became invalid. ``current`` is what the store holds now and validates (the write path's
    base), and ``invalid`` the items that do not validate, by store key.
    """

    def __init__(self, keys: KeySpace) -> None:
        self._keys = keys
        # Replaced, never mutated, on each snapshot.
        self._dict: dict[ObjectKey, Stored] = {}
        self._current: dict[ObjectKey, Stored] = self._dict
        self._invalid: dict[str, InvalidObject] = {}
        self.revision = 0
        self._changed = asyncio.Event()

    @property
    def state(self) -> Mapping[ObjectKey, Stored]:
        return MappingProxyType(self._dict)

    @property
    def current(self) -> Mapping[ObjectKey, Stored]:
        return MappingProxyType(self._current)

    @property
    def invalid(self) -> Mapping[str, InvalidObject]:
        return MappingProxyType(self._invalid)

    def report(self) -> list[dict[str, Any]]:
        """Summaries of the invalid items, by key: what status, readiness and listings show."""
        return [self._invalid[k].summary() for k in sorted(self._invalid)]

    def get(self, kind: str, name: str, cls: type[T]) -> T | None:
        """The object ``kind/name`` when the view holds one of type ``cls``."""
        found = self._dict.get((kind, name))
        return found.obj if found is not None and isinstance(found.obj, cls) else None

    def known(self, kv: KeyValue) -> Stored | InvalidObject | None:
        """The view's verdict on exactly these stored bytes, or None when it has not seen them."""
        bad = self._invalid.get(kv.key)
        if bad is not None:
            return bad if bad.revision == kv.mod_revision else None
        try:
            found = self._current.get(self._keys.parse_config(kv.key))
        except ValueError:
            return None
        return found if found is not None and found.revision == kv.mod_revision and found.raw == kv.value else None

    def _fold(
        self, kv: KeyValue, last_good: Stored | None, state: dict[ObjectKey, Stored], invalid: dict[str, InvalidObject]
    ) -> None:
        """Decode one stored item into ``state`` / ``invalid``; an invalid one keeps ``last_good``."""
        key = self._object_key(kv.key)
        if key is not None and last_good is not None and last_good.revision == kv.mod_revision and last_good.raw == kv.value:
            state[key] = last_good
            invalid.pop(kv.key, None)
            return
        try:
            obj = decode_at(self._keys, kv)
        except StoredInvalid as exc:
            if exc.item != invalid.get(kv.key):
                log.error("invalid stored object %s at revision %d (%s); keeping the last good value", kv.key,
                          kv.mod_revision, exc.item.error)  # fmt: skip
            invalid[kv.key] = exc.item
            if key is not None and last_good is not None:
                state[key] = last_good
            return
        assert key is not None
        state[key] = Stored(obj, kv.mod_revision, kv.value)
        invalid.pop(kv.key, None)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        invalid: dict[str, InvalidObject]
        if snapshot.relisted:
            state: dict[ObjectKey, Stored] = {}
            invalid = {}
            for kv in snapshot.items.values():
                self._fold(kv, self._last_good(kv.key), state, invalid)
        else:
            state, invalid = self._dict.copy(), self._invalid.copy()
            for ev in snapshot.changes:
                if ev.type is EventType.DELETE:
                    invalid.pop(ev.key, None)
                    key = self._object_key(ev.key)
                    if key is not None:
                        state.pop(key, None)
                else:
                    self._fold(KeyValue(ev.key, ev.value, ev.mod_revision, 0, 0), self._last_good(ev.key), state, invalid)
        self._dict, self._invalid = state, invalid
        self._current = state if not invalid else {k: v for k, v in state.items() if self._keys.config(*k) not in invalid}
        self.revision = snapshot.revision
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _object_key(self, store_key: str) -> ObjectKey | None:
        try:
            return self._keys.parse_config(store_key)
        except ValueError:
            return None

    def _last_good(self, store_key: str) -> Stored | None:
        key = self._object_key(store_key)
        return self._dict.get(key) if key is not None else None

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
