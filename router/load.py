"""The router's load report: its requests in flight per node, the nodes it sees draining, and per
model its requests in flight per node, its admission queue, its refusals and its tokens per
second, written under the router's own lease at ``/<ns>/v1/load/<router>`` when anything changes
(at most every ``every_s``) and at least every ``refresh_s``, so a reader can tell a quiet router
from a dead one. Agents draining a node for a restart wait on these reports, the autoscaler sizes
the fleet from them; a router that dies takes its report with it when its lease expires."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from controlplane.store.base import ConfigStore
from controlplane.store.errors import StoreError
from controlplane.store.keys import KeySpace
from controlplane.store.leases import LeaseKeeper
from router.admission import QueueFigures
from schemas.status import ModelLoad, RouterLoad

log = logging.getLogger(__name__)


class LoadReporter:
    def __init__(
        self, store: ConfigStore, keys: KeySpace, name: str, *, in_flight: Callable[[], dict[str, int]],
        draining: Callable[[], list[str]], by_model: Callable[[], dict[str, dict[str, int]]] = dict,
        generated: Callable[[], dict[tuple[str, str], int]] = dict, queue: Callable[[], dict[str, QueueFigures]] = dict,
        every_s: float = 1.0, refresh_s: float = 5.0, ttl_s: int = 10, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._key = keys.load(name)
        self._name = name
        self._in_flight, self._draining = in_flight, draining
        self._by_model, self._generated, self._queue = by_model, generated, queue
        self._every_s, self._refresh_s, self._clock = every_s, refresh_s, clock
        self._counted: tuple[float, dict[tuple[str, str], int]] | None = None  # (when, tokens) of the last report
        self._written_at = -float("inf")
        self.keeper = LeaseKeeper(store, ttl_s=ttl_s)
        self.written: RouterLoad | None = None
        self._store, self._prefix = store, keys.load_prefix()
        self.routers = 1  # routers with a live report, this one included (for a share of each rate limit)
        self._counted_at = 0.0

    def report(self) -> RouterLoad:
        draining = sorted(self._draining())
        return RouterLoad(router=self._name, in_flight=self._in_flight(), draining=draining, models=self._models())

    def _models(self) -> dict[str, ModelLoad]:
        """Each model's figures; tokens per second over the time since the last report."""
        now, generated = self._clock(), self._generated()
        rates: dict[str, dict[str, float]] = {}
        if self._counted is not None and now > self._counted[0]:
            before, seconds = self._counted[1], now - self._counted[0]
            for (model, node), total in generated.items():
                if (made := total - before.get((model, node), 0)) > 0:
                    rates.setdefault(model, {})[node] = round(made / seconds, 1)
        self._counted = (now, generated)
        flight, queue, out = self._by_model(), self._queue(), {}
        for model in sorted({*flight, *rates, *queue}):
            q = queue.get(model)
            out[model] = ModelLoad(in_flight=flight.get(model, {}), tokens_per_s=rates.get(model, {}),
                                   queued=q.waiting if q else 0, longest_wait_s=q.longest_wait_s if q else 0.0,
                                   refused=q.refused if q else 0)  # fmt: skip
        return out

    async def publish_once(self) -> bool:
        """Write the report if it changed, or if the last one is ``refresh_s`` old; True when written."""
        report = self.report()
        if self.written == report and self._clock() - self._written_at < self._refresh_s:
            return False
        body = orjson.dumps(report.model_copy(update={"updated_at": datetime.now(UTC)}).model_dump(mode="json"))
        await self.keeper.set_key(self._key, body)
        self.written, self._written_at = report, self._clock()
        return True

    async def _count_routers(self, every_s: float = 5.0) -> None:
        """How many routers report (at most every ``every_s``): a router's share of a limit is the
        limit over this count while the shared counters are away."""
        now = asyncio.get_running_loop().time()
        if now - self._counted_at < every_s:
            return
        self._counted_at = now
        listed = await self._store.list(self._prefix)
        self.routers = max(1, len(listed.items))

    async def run(self) -> None:
        """Publish forever; store outages are logged and retried on the next tick."""
        keeper = asyncio.create_task(self.keeper.run())
        try:
            while True:
                try:
                    await self.publish_once()
                    await self._count_routers()
                except StoreError as exc:
                    log.warning("load report not written: %s", exc)
                await asyncio.sleep(self._every_s)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def close(self) -> None:
        try:
            await self.keeper.close()  # the report goes with the lease
        except StoreError as exc:
            log.warning("load report lease not revoked (it expires): %s", exc)
