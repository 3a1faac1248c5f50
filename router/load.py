"""The router's load report: its requests in flight per node and the nodes it sees draining,
written under the router's own lease at ``/<ns>/v1/load/<router>`` when either changes (at most
every ``every_s``). Agents draining a node for a restart wait on these reports;
a router that dies takes its report with it when its lease expires."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from controlplane.store.base import ConfigStore
from controlplane.store.errors import StoreError
from controlplane.store.keys import KeySpace
from controlplane.store.leases import LeaseKeeper
from schemas.status import RouterLoad

log = logging.getLogger(__name__)


class LoadReporter:
    def __init__(
        self, store: ConfigStore, keys: KeySpace, name: str, *, in_flight: Callable[[], dict[str, int]],
        draining: Callable[[], list[str]], every_s: float = 0.5, ttl_s: int = 10,
    ) -> None:  # fmt: skip
        self._key = keys.load(name)
        self._name = name
        self._in_flight, self._draining = in_flight, draining
        self._every_s = every_s
        self.keeper = LeaseKeeper(store, ttl_s=ttl_s)
        self.written: RouterLoad | None = None
        self._store, self._prefix = store, keys.load_prefix()
        self.routers = 1  # routers with a live report, this one included (for a share of each rate limit)
        self._counted_at = 0.0

    def report(self) -> RouterLoad:
        return RouterLoad(router=self._name, in_flight=self._in_flight(), draining=sorted(self._draining()))

    async def publish_once(self) -> bool:
        """Write the report if it changed; True when written."""
        report = self.report()
        if self.written == report:
            return False
        body = orjson.dumps(report.model_copy(update={"updated_at": datetime.now(UTC)}).model_dump(mode="json"))
        await self.keeper.set_key(self._key, body)
        self.written = report
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
