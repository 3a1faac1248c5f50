"""Restarting a supervised Ollama without failing requests or emptying a pool: one node of a pool
at a time (a lease-bound turn per pool, taken without waiting: a node that cannot have every
turn it needs gives back what it took and tries again on a later pass); never while an
autoscaled model the node holds has fewer than its ``min_replicas`` ready elsewhere (the
autoscaler's records say how many are ready; it places one more while the node says it waits);
and a drain that ends when every live router has seen the node draining and has nothing in
flight on it, or after ``drain_s`` at most."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from controlplane.store.base import ConfigStore
from controlplane.store.errors import StoreError
from controlplane.store.informer import Informer, Snapshot
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from controlplane.store.view import decode_keyed
from schemas.placement import ScalingRecord
from schemas.status import RouterLoad

log = logging.getLogger(__name__)


class Restarts:
    def __init__(
        self, store: ConfigStore, keys: KeySpace, node: str, *, drain_s: float, ttl_s: int, idle_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic, loads: Informer | None = None,
    ) -> None:  # fmt: skip
        """``loads``: an informer on the routers' load reports that runs anyway (the agent's), else one of its own."""
        self._store, self._keys, self._node = store, keys, node
        self._drain_s, self._ttl_s, self._clock = drain_s, ttl_s, clock
        self.loads = loads or Informer(store, keys.load_prefix(), idle_timeout_s=idle_timeout_s)
        self.loads.add_handler(self._on_loads)
        self.reports: dict[str, RouterLoad] = {}
        self.holding: list[str] = []  # the pools whose turn this node holds

    def _on_loads(self, snapshot: Snapshot) -> None:
        self.reports, _ = decode_keyed(snapshot, RouterLoad, self.reports)

    @contextlib.asynccontextmanager
    async def turn(self, pools: tuple[str, ...]) -> AsyncIterator[bool]:
        """Take the restart turn of each of ``pools``: True when all are this node's; False, with
        none kept, when another node holds one (the caller tries again later). Never waits: a node
        waiting for its turn must go on reconciling, since the node restarting may wait for it to
        load a replica."""
        names = sorted(set(pools))
        elections = [Election(self._store, self._keys.election(f"restart-{pool}"), self._node, ttl_s=self._ttl_s)
                     for pool in names]  # fmt: skip
        keepers: list[asyncio.Task[None]] = []
        try:
            for pool, election in zip(names, elections, strict=True):
                if not await election.campaign_once():
                    log.info("node %s waits for its turn to restart in pool %s (held by %s)", self._node, pool,
                             await election.leader())  # fmt: skip
                    break
                keepers.append(asyncio.create_task(election.keeper.run()))
                self.holding.append(pool)
            yield len(self.holding) == len(names)
        finally:
            self.holding = []  # done with the restart: the next node may start as soon as a turn is released
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            for election in elections:
                with contextlib.suppress(StoreError):  # an unreachable store: the turn expires with its lease
                    await election.resign()

    async def short_elsewhere(self, held: Mapping[str, tuple[int, bool]]) -> list[str]:
        """Of ``held`` (Model name -> (min_replicas, ready here)), the models with fewer than their
        ``min_replicas`` ready on other nodes, as the autoscaler's records count them. A record
        counts only once it names this node as restarting: it was decided after the autoscaler
        saw this node wait, so after every status written before (a node that restarted just
        before, still to reload, is not counted ready)."""
        out = []
        for name, (minimum, here) in sorted(held.items()):
            if minimum <= 0:
                continue
            kv = await self._store.get(self._keys.scaling(name))
            record = ScalingRecord.model_validate_json(kv.value) if kv is not None else None
            if record is None or self._node not in record.restarting or record.ready - int(here) < minimum:
                out.append(name)
        return out

    async def replicas_elsewhere(
        self, held: Callable[[], Mapping[str, tuple[int, bool]]], *, wait_s: float, poll_s: float = 0.5,
        waiting: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> list[str]:  # fmt: skip
        """Wait (at most ``wait_s``) until ``short_elsewhere(held())`` is empty; what is still short.
        ``waiting`` hears the short list whenever it changes (the agent publishes it)."""
        deadline, last = self._clock() + wait_s, None
        while True:
            short = await self.short_elsewhere(held())
            if short != last and waiting is not None:
                await waiting(short)
            last = short
            if not short or self._clock() >= deadline:
                if short:
                    log.warning("node %s: restart put off, fewer than min_replicas ready elsewhere of %s", self._node,
                                ", ".join(short))  # fmt: skip
                return short
            await asyncio.sleep(poll_s)

    def waiting_for(self) -> dict[str, int]:
        """Routers that have not seen the node draining, or still have requests on it: router
        name → requests in flight on this node (-1: the drain not seen yet)."""
        out = {}
        for report in self.reports.values():
            if self._node not in report.draining:
                out[report.router] = -1
            elif report.in_flight.get(self._node, 0) > 0:
                out[report.router] = report.in_flight[self._node]
        return out

    async def drain(self, *, poll_s: float = 0.1) -> dict[str, int]:
        """Wait until no live router can send to or still serves the node (whose draining status
        is written), or ``drain_s`` passes; what was left waiting."""
        deadline = self._clock() + self._drain_s
        with contextlib.suppress(TimeoutError):  # no reports to read: the drain lasts its bound
            await self.loads.wait_synced(timeout_s=self._drain_s)
        while True:
            waiting = self.waiting_for()
            if not waiting:
                return {}
            if self._clock() >= deadline:
                log.warning("node %s: drained for %.0f s, restarting with routers still waiting: %s", self._node,
                            self._drain_s, waiting)  # fmt: skip
                return waiting
            await asyncio.sleep(poll_s)
