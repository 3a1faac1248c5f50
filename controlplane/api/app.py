"""FastAPI app factory: wires settings → store, database, services, informers and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text

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
from controlplane.db.engine import make_engine, migrate
from controlplane.services.apikeys import ApiKeyService, TenantBudgets, internal_headers
from controlplane.services.artifacts import ArtifactStore
from controlplane.services.autoscaler import Autoscaler, Timing
from controlplane.services.config import ConfigService
from controlplane.services.experiments import ExperimentControl, ExperimentResults
from controlplane.services.feedback import FeedbackService
from controlplane.services.figures import Figures
from controlplane.services.finetune import ArqQueue, FineTuneService
from controlplane.services.finetune_jobs import JobStore
from controlplane.services.fleet import FleetView
from controlplane.services.history import History
from controlplane.services.loops import every
from controlplane.services.monitor import start_monitor
from controlplane.services.playground import Playground
from controlplane.services.rag import open_rag
from controlplane.services.recovery import Recovery, RecoveryCollector
from controlplane.services.tokens import TokenService
from controlplane.services.tuning import TuningService
from controlplane.services.usage import Usage
from controlplane.settings import AutoscalerSettings, Settings
from controlplane.store.base import ConfigStore
from controlplane.store.factory import open_store
from controlplane.store.informer import Informer
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from controlplane.store.view import ConfigView
from controlplane.store.view_metrics import InvalidObjectsCollector

log = logging.getLogger(__name__)


async def _autoscale(
    settings: AutoscalerSettings, store: ConfigStore, keys: KeySpace, view: ConfigView, fleet: FleetView, history: History,
    informers: list[Informer],
) -> None:  # fmt: skip
    """The autoscaler's loop: one leader among the control planes (election ``autoscaler``)."""
    timing = Timing(stable_window_s=settings.stable_window_s, panic_window_s=settings.panic_window_s,
                    scale_down_delay_s=settings.scale_down_delay_s, stale_after_s=settings.stale_after_s,
                    node_grace_s=settings.node_grace_s)  # fmt: skip
    scaler = Autoscaler(store, keys, view=view, fleet=fleet, every_s=settings.every_s, timing=timing, history=history,
                        synced=lambda: asyncio.gather(*(i.wait_synced() for i in informers)))  # fmt: skip
    candidate = f"{socket.gethostname()}-{os.getpid()}"
    await scaler.run(Election(store, keys.election("autoscaler"), candidate, ttl_s=settings.lease_ttl_s))


def create_app(settings: Settings | None = None, *, store: ConfigStore | None = None) -> FastAPI:
    """The control-plane app; ``store`` overrides the configured backend (tests)."""
    settings = settings or Settings()
    registry = CollectorRegistry()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = KeySpace(settings.store.namespace)
        the_store = store or open_store(settings.store)
        engine = make_engine(settings.db.url)
        await asyncio.to_thread(migrate, engine)
        bootstrap = settings.auth.bootstrap_token.get_secret_value() if settings.auth.bootstrap_token else None
        view = ConfigView(keys)
        artifacts = ArtifactStore(engine)
        config_informer = Informer(
            the_store, keys.config_prefix(), idle_timeout_s=settings.store.idle_timeout_s, epoch_key=keys.epoch()
        )
        history = History(engine)
        service = ConfigService(
            the_store, history, keys=keys, view=view, max_txn_ops=settings.store.max_txn_ops, artifacts=artifacts,
            view_held=lambda: config_informer.held, max_delete_share=settings.api.max_delete_share,
        )  # fmt: skip
        recovery = Recovery(the_store, history, service, keys=keys)
        await recovery.check()  # a store that lost its history is found before the first request
        broadcaster = Broadcaster(keys)
        config_informer.add_handler(view.on_snapshot)
        config_informer.add_handler(broadcaster.publish)
        status_informer = Informer(the_store, keys.status_prefix(), idle_timeout_s=settings.store.idle_timeout_s)
        nodes_informer = Informer(the_store, keys.nodes_prefix(), idle_timeout_s=settings.store.idle_timeout_s)
        fleet_view = FleetView()
        status_informer.add_handler(fleet_view.on_status)
        nodes_informer.add_handler(fleet_view.on_nodes)
        # the autoscaler's records and placements (shown in the models' status, followed by its leader)
        scaling_informer = Informer(the_store, keys.scaling_prefix(), idle_timeout_s=settings.store.idle_timeout_s)
        placement_informer = Informer(the_store, keys.placement_prefix(), idle_timeout_s=settings.store.idle_timeout_s)
        scaling_informer.add_handler(fleet_view.on_scaling)
        placement_informer.add_handler(fleet_view.on_placement)
        install_informer_metrics(registry, {"config": config_informer, "status": status_informer, "nodes": nodes_informer})
        registry.register(FleetCollector(view, fleet_view))
        registry.register(InvalidObjectsCollector(view))
        registry.register(RecoveryCollector(recovery))

        async def check_db() -> None:
            def ping() -> None:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))

            await asyncio.to_thread(ping)

        pepper = settings.keys.pepper_bytes()  # read once: tokens, API keys and the control plane's own key
        router_headers = internal_headers(pepper)  # what its requests to the router carry (RAG, the judge)
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64), headers=router_headers)
        rag_service, close_rag = open_rag(settings.rag, view, http)
        playground_client = Playground(settings.rag.router_url)  # its own client: never the control plane's key
        queue = ArqQueue(settings.finetune.redis_url, settings.finetune.queue) if settings.finetune.redis_url else None
        experiments = ExperimentResults(engine, view)
        control = ExperimentControl(service, experiments)
        rt = Runtime(
            store=the_store,
            keys=keys,
            config=service,
            tokens=TokenService(engine, bootstrap_token=bootstrap, pepper=pepper),
            apikeys=ApiKeyService(the_store, keys, pepper=pepper),
            tenant_budgets=TenantBudgets(the_store, keys),
            usage=Usage(engine),
            config_informer=config_informer,
            status_informer=status_informer,
            nodes_informer=nodes_informer,
            view=view,
            fleet=fleet_view,
            tuning=TuningService(service, view, fleet_view),
            broadcaster=broadcaster,
            registry=registry,
            check_db=check_db,
            artifacts=artifacts,
            recovery=recovery,
            rag=rag_service,
            feedback=FeedbackService(engine, keep_samples_s=settings.monitor.keep_samples_s),
            figures=Figures(engine, keep_samples_s=settings.monitor.keep_samples_s, max_streams=settings.api.max_metric_streams),
            experiments=experiments,
            experiment_control=control,
            finetune=FineTuneService(JobStore(engine), service, view, queue, settings.finetune) if queue else None,
            playground=playground_client,
        )
        app.state.runtime = rt

        async def repair() -> None:
            repaired = await service.repair_pending()
            if repaired:
                log.warning("resolved %d audit change set(s) left pending by a crash", repaired)

        tasks = [
            asyncio.create_task(config_informer.run()),
            asyncio.create_task(status_informer.run()),
            asyncio.create_task(nodes_informer.run()),
            asyncio.create_task(scaling_informer.run()),
            asyncio.create_task(placement_informer.run()),
            asyncio.create_task(every(60, repair, name="pending-audit repair")),
            asyncio.create_task(every(settings.store.recovery_check_s, recovery.check, name="store recovery check")),
            asyncio.create_task(every(60, rt.apikeys.ensure_internal, name="the control plane's own API key")),
        ]
        if rt.finetune is not None:  # re-queue lost runs, register finished ones
            assert settings.finetune.redis_url is not None
            tasks.append(asyncio.create_task(rt.finetune.run(settings.finetune.redis_url)))
        if settings.autoscaler.enabled:
            tasks.append(asyncio.create_task(_autoscale(settings.autoscaler, the_store, keys, view, fleet_view, history,
                                                     [config_informer, status_informer, nodes_informer])))
        if settings.monitor.redis_url:
            monitor = start_monitor(settings.monitor, engine, the_store, keys, tick=control.tick, registry=registry,
                                    router_headers=router_headers)  # fmt: skip
            tasks.append(asyncio.create_task(monitor))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if store is None:
                await the_store.close()
            engine.dispose()
            await close_rag()
            if queue is not None:
                await queue.close()
            await http.aclose()
            await playground_client.aclose()

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
