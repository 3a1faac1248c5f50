"""The control plane's optional parts, each built from settings with ``start()`` and ``close()``:
RAG, the performance monitor (figures, feedback, experiments and the monitor's loops), fine-tuning,
the autoscaler, the background upkeep of the audit log and of the control plane's own key, and the
web UI's playground relay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from controlplane.db.jobs import JobStore
from controlplane.runtime.core import Core
from controlplane.services.autoscaler import Autoscaler, Timing
from controlplane.services.experiments import ExperimentControl, ExperimentResults
from controlplane.services.feedback import FeedbackService
from controlplane.services.figures import Figures
from controlplane.services.finetune import ArqQueue, FineTuneService
from controlplane.services.loops import every, lead
from controlplane.services.monitor import start_monitor
from controlplane.services.playground import Playground
from controlplane.services.quality import QualityBook, QualityCollector, QualityLoop
from controlplane.services.rag import RagService, open_rag
from controlplane.store.leases import Election

log = logging.getLogger(__name__)


class Subsystem:
    """Loops started by ``start`` and cancelled by ``close``; resources released by ``release``."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, loop: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(loop))

    async def start(self) -> None:
        """Start this subsystem's loops (none by default)."""

    async def release(self) -> None:
        """Close clients and files (nothing by default)."""

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.release()


class Rag(Subsystem):
    """Ingest and query: embedded Chroma or a server, the catalog, the embedders (through the router)."""

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.service: RagService
        self.service, self._close = open_rag(core.settings.rag, core.view, core.router, core.engine)

    async def release(self) -> None:
        await self._close()


class Monitor(Subsystem):
    """Figures, feedback, experiment results and quality posteriors for the API; with Redis, the
    monitor's loops (outcome consumer, judge, guardrails, bandit, the quality posteriors'
    publication) as the leader of the ``monitor`` election."""

    def __init__(self, core: Core, *, loops: bool, registry: CollectorRegistry) -> None:
        super().__init__()
        self._core, self._loops, self._registry = core, loops, registry
        settings = core.settings
        self.feedback = FeedbackService(core.engine, keep_samples_s=settings.monitor.keep_samples_s)
        self.figures = Figures(core.engine, keep_samples_s=settings.monitor.keep_samples_s,
                               max_streams=settings.api.max_metric_streams)  # fmt: skip
        self.experiments = ExperimentResults(core.engine, core.view)
        self.control = ExperimentControl(core.config, self.experiments)
        self.quality = QualityBook(core.engine, core.view)
        self.publisher = QualityLoop(self.quality, core.config, core.store, core.keys, history=core.history)
        registry.register(QualityCollector(self.publisher))

    async def start(self) -> None:
        core = self._core
        if self._loops and core.settings.monitor.redis_url:
            self.spawn(start_monitor(core.settings.monitor, core.engine, core.election("monitor"), tick=self.control.tick,
                                     registry=self._registry, router=core.router,
                                     quality=self.publisher))  # fmt: skip


class FineTuning(Subsystem):
    """Jobs on the Redis queue; ``loops``: re-queue lost runs and register finished ones, as the
    leader of the ``finetune`` election."""

    def __init__(self, core: Core, *, loops: bool) -> None:
        super().__init__()
        settings = core.settings.finetune
        assert settings.redis_url is not None
        self._core, self._redis_url, self._loops = core, settings.redis_url, loops
        self.queue = ArqQueue(settings.redis_url, settings.queue)
        self.service = FineTuneService(JobStore(core.engine), core.config, core.view, self.queue, settings)

    async def start(self) -> None:
        if self._loops:
            self.spawn(self.service.run(self._core.election("finetune"), self._redis_url))

    async def release(self) -> None:
        await self.queue.close()


class Autoscaling(Subsystem):
    """The autoscaler's loop: one leader among the control planes (election ``autoscaler``); a
    new leader decides nothing until the configuration, node and status informers have listed."""

    def __init__(self, core: Core) -> None:
        super().__init__()
        self._core = core

    async def start(self) -> None:
        core, settings = self._core, self._core.settings.autoscaler
        timing = Timing(stable_window_s=settings.stable_window_s, panic_window_s=settings.panic_window_s,
                        scale_down_delay_s=settings.scale_down_delay_s, stale_after_s=settings.stale_after_s,
                        node_grace_s=settings.node_grace_s)  # fmt: skip
        synced = [core.informers.config, core.informers.status, core.informers.nodes]
        scaler = Autoscaler(core.store, core.keys, view=core.view, fleet=core.fleet, every_s=settings.every_s, timing=timing,
                            history=core.history, synced=lambda: asyncio.gather(*(i.wait_synced() for i in synced)))  # fmt: skip
        self.spawn(scaler.run(core.election("autoscaler", ttl_s=settings.lease_ttl_s)))


class Upkeep(Subsystem):
    """The audit log's pending change sets a crash left behind (as the leader of the ``upkeep``
    election), and on each replica the store's standing against the audit log (each reports its
    own; its one write is a compare-and-set) and the control plane's own API key (the one its
    router requests carry; written only when missing, with a compare-and-set)."""

    def __init__(self, core: Core, *, repair_every_s: float = 60.0) -> None:
        super().__init__()
        self._core, self._repair_every_s = core, repair_every_s

    async def _repair(self, election: Election) -> None:
        repaired = await self._core.config.repair_pending(leading=election.fence)
        if repaired:
            log.warning("resolved %d audit change set(s) left pending by a crash", repaired)

    async def start(self) -> None:
        core = self._core
        self.spawn(lead(core.election("upkeep"), self._repair, name="pending-audit repair", every_s=self._repair_every_s))
        self.spawn(every(core.settings.store.recovery_check_s, core.recovery.check, name="store recovery check"))
        self.spawn(every(60, core.apikeys.ensure_internal, name="the control plane's own API key"))


class PlaygroundRelay(Subsystem):
    """The web UI's playground: chats through the router with the person's key."""

    def __init__(self, core: Core) -> None:
        super().__init__()
        settings = core.settings.router_client  # its own client: never the control plane's key
        self.playground = Playground(settings.url, timeout_s=settings.timeout_s)

    async def release(self) -> None:
        await self.playground.aclose()
