"""The core every control-plane replica runs: the configuration store and its informers, the
metadata database, the configuration service with its audit log and recovery, the views of the
configuration and of the fleet, the token and API-key services, and the client of the router."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass

from sqlalchemy import Engine, text

from controlplane.db.artifacts import ArtifactStore
from controlplane.db.engine import make_engine, migrate
from controlplane.services.apikeys import ApiKeyService, TenantBudgets, internal_headers
from controlplane.services.config import ConfigService
from controlplane.services.fleet import FleetView
from controlplane.services.history import History
from controlplane.services.recovery import Recovery
from controlplane.services.tokens import TokenService
from controlplane.services.tuning import TuningService
from controlplane.services.usage import Usage
from controlplane.settings import Settings
from controlplane.store.base import ConfigStore
from controlplane.store.factory import open_store
from controlplane.store.informer import Informer
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from controlplane.store.view import ConfigView
from rag.router_client import RouterClient


@dataclass
class Informers:
    """The store prefixes the control plane follows, each fed into its view."""

    config: Informer
    status: Informer
    nodes: Informer
    scaling: Informer  # the autoscaler's records (models' status shows them)
    placement: Informer  # the autoscaled models each node is given

    def all(self) -> list[Informer]:
        return [self.config, self.status, self.nodes, self.scaling, self.placement]


class Core:
    """Built from settings without starting anything; ``start`` checks the store against the
    audit log (before the first request) and starts the informers."""

    def __init__(self, settings: Settings, *, store: ConfigStore | None = None) -> None:
        self.settings = settings
        self.keys = KeySpace(settings.store.namespace)
        self.owns_store = store is None
        self.store = store or open_store(settings.store)
        self.engine: Engine = make_engine(settings.db.url)
        self.view = ConfigView(self.keys)
        self.artifacts = ArtifactStore(self.engine)
        self.history = History(self.engine)
        idle = settings.store.idle_timeout_s
        self.informers = Informers(
            config=Informer(self.store, self.keys.config_prefix(), idle_timeout_s=idle, epoch_key=self.keys.epoch()),
            status=Informer(self.store, self.keys.status_prefix(), idle_timeout_s=idle),
            nodes=Informer(self.store, self.keys.nodes_prefix(), idle_timeout_s=idle),
            scaling=Informer(self.store, self.keys.scaling_prefix(), idle_timeout_s=idle),
            placement=Informer(self.store, self.keys.placement_prefix(), idle_timeout_s=idle),
        )
        self.config = ConfigService(
            self.store, self.history, keys=self.keys, view=self.view, max_txn_ops=settings.store.max_txn_ops,
            artifacts=self.artifacts, view_held=lambda: self.informers.config.held,
            max_delete_share=settings.api.max_delete_share,
        )  # fmt: skip
        self.recovery = Recovery(self.store, self.history, self.config, keys=self.keys)
        self.fleet = FleetView()
        self.informers.config.add_handler(self.view.on_snapshot)
        self.informers.status.add_handler(self.fleet.on_status)
        self.informers.nodes.add_handler(self.fleet.on_nodes)
        self.informers.scaling.add_handler(self.fleet.on_scaling)
        self.informers.placement.add_handler(self.fleet.on_placement)
        self.pepper = settings.keys.pepper_bytes()  # read once: tokens, API keys and the control plane's own key
        bootstrap = settings.auth.bootstrap_token.get_secret_value() if settings.auth.bootstrap_token else None
        self.tokens = TokenService(self.engine, bootstrap_token=bootstrap, pepper=self.pepper)
        self.apikeys = ApiKeyService(self.store, self.keys, pepper=self.pepper)
        self.tenant_budgets = TenantBudgets(self.store, self.keys)
        self.usage = Usage(self.engine)
        self.tuning = TuningService(self.config, self.view, self.fleet)
        client = settings.router_client  # the one client of the router, with the control plane's own key
        self.router = RouterClient(client.url, headers=internal_headers(self.pepper), timeout_s=client.timeout_s,
                                   attempts=client.attempts)  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []

    def election(self, role: str, *, ttl_s: int | None = None) -> Election:
        """This replica as a candidate to lead ``role``'s loops (``/<ns>/v1/election/<role>``)."""
        candidate = f"{socket.gethostname()}-{os.getpid()}"
        return Election(self.store, self.keys.election(role), candidate, ttl_s=ttl_s or self.settings.leader_ttl_s)

    async def start(self) -> None:
        await asyncio.to_thread(migrate, self.engine)
        await self.recovery.check()  # a store that lost its history is found before the first request
        self._tasks = [asyncio.create_task(informer.run()) for informer in self.informers.all()]

    async def check_db(self) -> None:
        def ping() -> None:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        await asyncio.to_thread(ping)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.owns_store:
            await self.store.close()
        await self.router.aclose()
        self.engine.dispose()
