"""``ControlPlane``: the core and the subsystems this replica's roles ask for (``LLMTUNE_ROLES``,
every role by default), started and stopped together."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from controlplane.runtime.core import Core
from controlplane.runtime.subsystems import Autoscaling, FineTuning, Monitor, PlaygroundRelay, Rag, Subsystem, Upkeep
from controlplane.settings import Settings
from controlplane.store.base import ConfigStore


class ControlPlane:
    """``roles``: ``api`` serves the REST API and the UI; ``rag`` ingests and answers RAG queries;
    ``monitor`` runs the monitor's loops (with Redis); ``finetune`` registers finished jobs and
    re-queues lost ones; ``autoscaler`` runs the autoscaler (when enabled); ``upkeep`` repairs the
    audit log and keeps the control plane's own key. The monitor and the autoscaler elect one
    leader among the replicas with their role; fine-tune registration and upkeep run on every
    replica with theirs."""

    def __init__(
        self, settings: Settings, *, store: ConfigStore | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.roles = frozenset(settings.roles)
        self.registry = registry or CollectorRegistry()
        self.core = Core(settings, store=store)
        self.monitor = Monitor(self.core, loops="monitor" in self.roles, registry=self.registry)
        self.rag = Rag(self.core) if "rag" in self.roles else None
        self.finetune = FineTuning(self.core, loops="finetune" in self.roles) if settings.finetune.redis_url else None
        self.playground = PlaygroundRelay(self.core)
        autoscaling = Autoscaling(self.core) if "autoscaler" in self.roles and settings.autoscaler.enabled else None
        upkeep = Upkeep(self.core) if "upkeep" in self.roles else None
        parts = (self.monitor, self.rag, self.finetune, self.playground, autoscaling, upkeep)
        self._subsystems: list[Subsystem] = [part for part in parts if part is not None]

    async def start(self) -> None:
        """Start the core, then each subsystem; a failure half-way stops what already started."""
        try:
            await self.core.start()
            for subsystem in self._subsystems:
                await subsystem.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for subsystem in reversed(self._subsystems):
            await subsystem.close()
        await self.core.close()
