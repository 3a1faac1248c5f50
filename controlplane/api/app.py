"""The REST API's app: the control plane's runtime (``controlplane.runtime``) behind the routes,
the error answers, the request limits and the web UI."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from controlplane.api import errors, openapi, ui
from controlplane.api.broadcast import Broadcaster
from controlplane.api.deps import Runtime
from controlplane.api.limits import AuthenticateFirst, BodyLimit
from controlplane.api.metrics import FleetCollector, MetricsMiddleware, install_informer_metrics
from controlplane.api.routes import (
    apikeys,
    artifacts,
    config,
    finetune,
    fleet,
    health,
    history,
    monitor,
    playground,
    rag,
    tokens,
    watch,
)
from controlplane.runtime import ControlPlane
from controlplane.services.recovery import RecoveryCollector
from controlplane.settings import Settings
from controlplane.store.base import ConfigStore
from controlplane.store.view_metrics import InvalidObjectsCollector

log = logging.getLogger(__name__)


def runtime_of(plane: ControlPlane, broadcaster: Broadcaster) -> Runtime:
    """What the routes use, from the control plane's parts."""
    core, monitor = plane.core, plane.monitor
    return Runtime(
        store=core.store, keys=core.keys, config=core.config, tokens=core.tokens, apikeys=core.apikeys,
        tenant_budgets=core.tenant_budgets, usage=core.usage, config_informer=core.informers.config,
        status_informer=core.informers.status, nodes_informer=core.informers.nodes, view=core.view, fleet=core.fleet,
        tuning=core.tuning, broadcaster=broadcaster, registry=plane.registry, check_db=core.check_db,
        artifacts=core.artifacts, recovery=core.recovery, rag=plane.rag.service if plane.rag else None,
        feedback=monitor.feedback, figures=monitor.figures, experiments=monitor.experiments,
        experiment_control=monitor.control, quality=monitor.quality, finetune=plane.finetune.service if plane.finetune else None,
        playground=plane.playground.playground, roles=plane.roles,
    )  # fmt: skip


def create_app(settings: Settings | None = None, *, store: ConfigStore | None = None) -> FastAPI:
    """The control-plane app; ``store`` overrides the configured backend (tests)."""
    settings = settings or Settings()
    registry = CollectorRegistry()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plane = ControlPlane(settings, store=store, registry=registry)
        core = plane.core
        broadcaster = Broadcaster(core.keys)
        core.informers.config.add_handler(broadcaster.publish)
        informers = core.informers
        install_informer_metrics(registry, {"config": informers.config, "status": informers.status, "nodes": informers.nodes})
        registry.register(FleetCollector(core.view, core.fleet))
        registry.register(InvalidObjectsCollector(core.view))
        registry.register(RecoveryCollector(core.recovery))
        await plane.start()
        app.state.runtime = runtime_of(plane, broadcaster)
        try:
            yield
        finally:
            await plane.close()

    app = FastAPI(
        title="LLM Tuning Service — control plane",
        version="0.1.0",
        lifespan=lifespan,
        description="Versioned model, routing, RAG and experiment configuration for a fleet of Ollama nodes.",
    )
    errors.install(app)
    openapi.install(app)
    # Document batches may be larger than configuration: their own limit (plus JSON's overhead) applies.
    # So may a fine-tuning dataset, up to finetune.max_dataset_bytes.
    rag_limit = max(settings.api.max_body_bytes, settings.rag.max_batch_bytes * 5 // 4)
    dataset_limit = max(settings.api.max_body_bytes, settings.finetune.max_dataset_bytes + 1024)
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes,
                       wider={"/api/v1/rag/collections/": rag_limit, "/api/v1/fine-tune/datasets": dataset_limit})  # fmt: skip
    app.add_middleware(AuthenticateFirst)  # added after BodyLimit, so it runs before it: no body is read for a stranger
    app.add_middleware(MetricsMiddleware, registry=registry)
    for module in (config, history, watch, tokens, apikeys, fleet, health, rag, monitor, finetune, artifacts, playground):
        app.include_router(module.router)
    ui.install(app, settings.api.ui_dir)
    return app
