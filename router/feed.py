"""Keeps the router's table current: informers on configuration, node registrations, node status,
the autoscaler's placements and the monitor's quality posteriors; a new immutable table is built
when any of them moves (never per request).

Requests hold the table they started with; a rebuild only swaps the reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controlplane.store.base import ConfigStore
from controlplane.store.informer import Informer, Snapshot
from controlplane.store.keys import KeySpace
from controlplane.store.view import ConfigView, decode_keyed
from router.table import RouteTable, build_table
from schemas.apikey import ApiKey, TenantBudget
from schemas.placement import NodePlacement
from schemas.quality import RouteQuality
from schemas.status import NodeRegistration, NodeStatus


class TableFeed:
    """Five informers feeding one table (configuration, registrations, status, the autoscaler's
    placements, the monitor's quality posteriors); ``table`` is always a complete, consistent snapshot. Two more keep the API keys
    (``keys``) and tenants' budgets, which change apart from the table."""

    def __init__(self, store: ConfigStore, keys: KeySpace, *, idle_timeout_s: float = 30.0) -> None:
        self.config = Informer(store, keys.config_prefix(), idle_timeout_s=idle_timeout_s, epoch_key=keys.epoch())
        self.nodes = Informer(store, keys.nodes_prefix(), idle_timeout_s=idle_timeout_s)
        self.status = Informer(store, keys.status_prefix(), idle_timeout_s=idle_timeout_s)
        self.apikeys = Informer(store, keys.apikeys_prefix(), idle_timeout_s=idle_timeout_s)
        self.tenants = Informer(store, keys.tenants_prefix(), idle_timeout_s=idle_timeout_s)
        self.placement = Informer(store, keys.placement_prefix(), idle_timeout_s=idle_timeout_s)
        self.quality = Informer(store, keys.quality_prefix(), idle_timeout_s=idle_timeout_s)
        self.keys: dict[str, ApiKey] = {}
        self.tenant_budgets: dict[str, TenantBudget] = {}  # by tenant: read per request, replaced whole
        self._key_listeners: list[Callable[[dict[str, ApiKey]], None]] = []
        self.table = build_table([], {}, {}, revision=0)
        self._view = ConfigView(keys)
        self._registrations: dict[str, NodeRegistration] = {}
        self._statuses: dict[str, NodeStatus] = {}
        self._placements: dict[str, NodePlacement] = {}
        self._quality: dict[str, RouteQuality] = {}
        self._listeners: list[Callable[[RouteTable], None]] = []
        self.config.add_handler(self._on_config)
        self.nodes.add_handler(self._on_nodes)
        self.status.add_handler(self._on_status)
        self.apikeys.add_handler(self._on_keys)
        self.tenants.add_handler(self._on_tenants)
        self.placement.add_handler(self._on_placement)
        self.quality.add_handler(self._on_quality)

    @property
    def view(self) -> ConfigView:
        """The decoded configuration the table is built from (and the invalid items it skipped)."""
        return self._view

    def add_listener(self, listener: Callable[[RouteTable], None]) -> None:
        self._listeners.append(listener)

    def add_key_listener(self, listener: Callable[[dict[str, ApiKey]], None]) -> None:
        self._key_listeners.append(listener)

    def _on_keys(self, snapshot: Snapshot) -> None:
        self.keys, _ = decode_keyed(snapshot, ApiKey, self.keys)
        for listener in self._key_listeners:
            listener(self.keys)

    def _on_tenants(self, snapshot: Snapshot) -> None:
        self.tenant_budgets = decode_keyed(snapshot, TenantBudget, self.tenant_budgets)[0]

    def _on_config(self, snapshot: Snapshot) -> None:
        self._view.on_snapshot(snapshot)
        self._rebuild()

    def _on_nodes(self, snapshot: Snapshot) -> None:
        self._registrations, _ = decode_keyed(snapshot, NodeRegistration, self._registrations)
        self._rebuild()

    def _on_status(self, snapshot: Snapshot) -> None:
        self._statuses, _ = decode_keyed(snapshot, NodeStatus, self._statuses)
        self._rebuild()

    def _on_placement(self, snapshot: Snapshot) -> None:
        self._placements, _ = decode_keyed(snapshot, NodePlacement, self._placements)
        self._rebuild()

    def _on_quality(self, snapshot: Snapshot) -> None:
        self._quality, _ = decode_keyed(snapshot, RouteQuality, self._quality)
        self._rebuild()

    def _rebuild(self) -> None:
        revision = max(self.config.snapshot.revision, self.nodes.snapshot.revision, self.status.snapshot.revision,
                       self.placement.snapshot.revision, self.quality.snapshot.revision)  # fmt: skip
        placed = {node: frozenset(p.models) for node, p in self._placements.items()}
        self.table = build_table(
            [stored.obj for stored in self._view.state.values()], self._registrations, self._statuses, revision=revision,
            placements=placed, quality={q.route: q for q in self._quality.values()},
        )  # fmt: skip
        for listener in self._listeners:
            listener(self.table)

    def draining(self) -> list[str]:
        """Nodes whose live status says draining (the router sends them nothing new)."""
        return [node for node, status in self._statuses.items() if status.draining]

    @property
    def synced(self) -> bool:
        informers = (self.config, self.nodes, self.status, self.apikeys, self.tenants, self.placement, self.quality)
        return all(i.synced for i in informers)

    async def run(self) -> None:
        await asyncio.gather(self.config.run(), self.nodes.run(), self.status.run(), self.apikeys.run(), self.tenants.run(),
                             self.placement.run(), self.quality.run())  # fmt: skip
