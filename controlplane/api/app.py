"""FastAPI app factory: wires settings → store, database, services, informers and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.api import errors
from controlplane.api.broadcast import Broadcaster
from controlplane.api.deps import Runtime
from controlplane.api.routes import config, health, history, tokens, watch
from controlplane.db.engine import make_engine, migrate
from controlplane.services.config import ConfigService
from controlplane.services.history import History
from controlplane.services.tokens import TokenService
from controlplane.services.view import ConfigView
from controlplane.settings import Settings
from controlplane.store.base import ConfigStore
from controlplane.store.factory import open_store
from controlplane.store.informer import Informer, Snapshot
from controlplane.store.keys import KeySpace

log = logging.getLogger(__name__)


class MetricsMiddleware:
    """Request count and latency per route template (plain ASGI: BaseHTTPMiddleware costs ~1 ms a request)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("llmtune_api_requests_total", "API requests.", ["method", "route", "status"], registry=registry)
        self.latency = Histogram(
            "llmtune_api_request_duration_seconds",
            "API request latency.",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.latency.labels(scope["method"], path).observe(time.perf_counter() - start)
            self.requests.labels(scope["method"], path, str(status)).inc()


class BodyLimit:
    """413 (problem+json) for a body over the limit: at once when Content-Length says so, else as
    soon as the streamed bytes pass it. (FastAPI's max_body_size answers in plain text.)"""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            await errors.problem(413, "Request too large", self._detail(int(declared)))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise errors.BodyTooLarge(self._detail(seen))
            return message

        await self.app(scope, counted, send)

    def _detail(self, size: int) -> str:
        return f"the request body is at least {size} bytes; the limit is {self.limit} (api.max_body_bytes)"


def create_app(settings: Settings | None = None, *, store: ConfigStore | None = None) -> FastAPI:
    """The control-plane app; ``store`` overrides the configured backend (tests)."""
    settings = settings or Settings()
    registry = CollectorRegistry()
    revision_gauge = Gauge("llmtune_config_revision", "Configuration revision the control plane has seen.", registry=registry)
    objects_gauge = Gauge("llmtune_config_objects", "Configuration objects in the store.", registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = KeySpace(settings.store.namespace)
        the_store = store or open_store(settings.store)
        engine = make_engine(settings.db.url)
        await asyncio.to_thread(migrate, engine)
        bootstrap = settings.auth.bootstrap_token.get_secret_value() if settings.auth.bootstrap_token else None
        view = ConfigView(keys)
        service = ConfigService(the_store, History(engine), keys=keys, view=view, max_txn_ops=settings.store.max_txn_ops)
        broadcaster = Broadcaster(keys)
        config_informer = Informer(the_store, keys.config_prefix(), idle_timeout_s=settings.store.idle_timeout_s)
        config_informer.add_handler(view.on_snapshot)
        status_informer = Informer(the_store, keys.status_prefix(), idle_timeout_s=settings.store.idle_timeout_s)

        def on_config(snapshot: Snapshot) -> None:
            revision_gauge.set(snapshot.revision)
            objects_gauge.set(len(snapshot.items))
            broadcaster.publish(snapshot)

        config_informer.add_handler(on_config)

        async def check_db() -> None:
            def ping() -> None:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))

            await asyncio.to_thread(ping)

        rt = Runtime(
            store=the_store,
            keys=keys,
            config=service,
            tokens=TokenService(engine, bootstrap_token=bootstrap),
            config_informer=config_informer,
            status_informer=status_informer,
            broadcaster=broadcaster,
            registry=registry,
            check_db=check_db,
        )
        app.state.runtime = rt
        tasks = [asyncio.create_task(config_informer.run()), asyncio.create_task(status_informer.run())]
        with contextlib.suppress(Exception):
            repaired = await service.repair_pending()
            if repaired:
                log.warning("resolved %d change set(s) left pending by an earlier crash", repaired)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if store is None:
                await the_store.close()
            engine.dispose()

    app = FastAPI(
        title="LLM Tuning Service — control plane",
        version="0.1.0",
        lifespan=lifespan,
        description="Versioned model, routing, RAG and experiment configuration for a fleet of Ollama nodes.",
    )
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(MetricsMiddleware, registry=registry)
    for module in (config, history, watch, tokens, health):
        app.include_router(module.router)
    return app
