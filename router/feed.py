"""Keeps the router's table current: the one informer on configuration, node registrations and
node status; a new immutable table is built when any of them moves (never per request).

Requests hold the table they started with; a rebuild only swaps the reference.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from controlplane.store.base import ConfigStore
from controlplane.store.informer import Informer, Snapshot
from controlplane.store.keys import KeySpace
from router.table import RouteTable, build_table
from schemas.common import ConfigObject
from schemas.registry import parse_object
from schemas.status import NodeRegistration, NodeStatus

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)


def _decode_all(snapshot: Snapshot, cls: type[T], old: dict[str, tuple[int, T]]) -> dict[str, tuple[int, T]]:
    """Values by the key's last segment, decoding only what changed since ``old``."""
    out: dict[str, tuple[int, T]] = {}
    for key, kv in snapshot.items.items():
        name = key.rsplit("/", 1)[-1]
        prev = old.get(name)
        if prev is not None and prev[0] == kv.mod_revision:
            out[name] = prev
            continue
        try:
            out[name] = (kv.mod_revision, cls.model_validate_json(kv.value))
        except ValidationError:
            log.error("ignoring unreadable %s at %s", cls.__name__, key)
    return out


class TableFeed:
    """Three informers feeding one table; ``table`` is always a complete, consistent snapshot."""

    def __init__(self, store: ConfigStore, keys: KeySpace, *, idle_timeout_s: float = 30.0) -> None:
        self.config = Informer(store, keys.config_prefix(), idle_timeout_s=idle_timeout_s)
        self.nodes = Informer(store, keys.nodes_prefix(), idle_timeout_s=idle_timeout_s)
        self.status = Informer(store, keys.status_prefix(), idle_timeout_s=idle_timeout_s)
        self.table = build_table([], {}, {}, revision=0)
        self._objects: dict[str, tuple[int, ConfigObject]] = {}
        self._registrations: dict[str, tuple[int, NodeRegistration]] = {}
        self._statuses: dict[str, tuple[int, NodeStatus]] = {}
        self._listeners: list[Callable[[RouteTable], None]] = []
        self.config.add_handler(self._on_config)
        self.nodes.add_handler(self._on_nodes)
        self.status.add_handler(self._on_status)

    def add_listener(self, listener: Callable[[RouteTable], None]) -> None:
        self._listeners.append(listener)

    def _on_config(self, snapshot: Snapshot) -> None:
        objects: dict[str, tuple[int, ConfigObject]] = {}
        for key, kv in snapshot.items.items():
            prev = self._objects.get(key)
            if prev is not None and prev[0] == kv.mod_revision:
                objects[key] = prev
                continue
            try:
                objects[key] = (kv.mod_revision, parse_object(json.loads(kv.value)).with_revision(kv.mod_revision))
            except (ValueError, ValidationError):
                log.error("invalid stored object %s; keeping the last good value", key)
                if prev is not None:
                    objects[key] = prev
        self._objects = objects
        self._rebuild()

    def _on_nodes(self, snapshot: Snapshot) -> None:
        self._registrations = _decode_all(snapshot, NodeRegistration, self._registrations)
        self._rebuild()

    def _on_status(self, snapshot: Snapshot) -> None:
        self._statuses = _decode_all(snapshot, NodeStatus, self._statuses)
        self._rebuild()

    def _rebuild(self) -> None:
        revision = max(self.config.snapshot.revision, self.nodes.snapshot.revision, self.status.snapshot.revision)
        self.table = build_table(
            [o for _, o in self._objects.values()],
            {k: v for k, (_, v) in self._registrations.items()},
            {k: v for k, (_, v) in self._statuses.items()},
            revision=revision,
        )
        for listener in self._listeners:
            listener(self.table)

    @property
    def synced(self) -> bool:
        return self.config.synced and self.nodes.synced and self.status.synced

    async def run(self) -> None:
        await asyncio.gather(self.config.run(), self.nodes.run(), self.status.run())
