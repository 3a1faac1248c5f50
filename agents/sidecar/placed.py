"""The autoscaler's word to this node: which autoscaled models it should hold
(``/<ns>/v1/placement/<node>``), and a model's drain before it is unloaded: the routers stop
sending it here as soon as they see the new placement, and the agent waits (bounded) until no
router's load report shows a request of that model in flight on this node."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from controlplane.store.base import ConfigStore
from controlplane.store.informer import Informer, Snapshot
from controlplane.store.keys import KeySpace
from controlplane.store.view import decode_keyed
from schemas.placement import NodePlacement
from schemas.status import RouterLoad

log = logging.getLogger(__name__)


class Placed:
    def __init__(
        self, store: ConfigStore, keys: KeySpace, node: str, *, drain_s: float, settle_s: float = 2.0,
        idle_timeout_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        """``settle_s``: how long routers get to see a new placement before in-flight counts are read
        (their reports are written at least every second while anything changes)."""
        self._node, self._key = node, keys.placement(node)
        self._drain_s, self._settle_s, self._clock = drain_s, settle_s, clock
        # The node's own key as a prefix (etcd roles grant it): keys of other nodes that share the prefix are skipped.
        self.placement = Informer(store, self._key, idle_timeout_s=idle_timeout_s)
        self.placement.add_handler(self._on_placement)
        self.loads = Informer(store, keys.load_prefix(), idle_timeout_s=idle_timeout_s)
        self.loads.add_handler(self._on_loads)
        self.models: frozenset[str] = frozenset()  # Model names the autoscaler placed here
        self.reports: dict[str, RouterLoad] = {}
        self.listeners: list[Callable[[], None]] = []

    def _on_placement(self, snapshot: Snapshot) -> None:
        kv = snapshot.items.get(self._key)
        self.models = frozenset(NodePlacement.model_validate_json(kv.value).models) if kv is not None else frozenset()
        for listener in self.listeners:
            listener()

    def _on_loads(self, snapshot: Snapshot) -> None:
        self.reports, _ = decode_keyed(snapshot, RouterLoad, self.reports)

    def in_flight(self, models: Iterable[str]) -> int:
        """Requests of ``models`` (Model names) the routers report in flight on this node."""
        wanted = set(models)
        return sum(
            load.in_flight.get(self._node, 0) for report in self.reports.values() for name, load in report.models.items()
            if name in wanted
        )  # fmt: skip

    async def drain(self, models: Iterable[str], *, poll_s: float = 0.1) -> int:
        """Wait until no router has a request of ``models`` in flight here (at most ``drain_s``);
        the requests still in flight when it gave up."""
        names = sorted(models)
        deadline = self._clock() + self._drain_s
        await asyncio.sleep(self._settle_s)
        while True:  # polled: the reports arrive through the informer, a few times a second at most
            left = self.in_flight(names)
            if not left:
                return 0
            if self._clock() >= deadline:
                log.warning("node %s: unloading %s after %.0f s with %d request(s) still in flight", self._node,
                            ", ".join(names), self._drain_s, left)  # fmt: skip
                return left
            await asyncio.sleep(poll_s)

    async def run(self) -> None:
        await asyncio.gather(self.placement.run(), self.loads.run())
