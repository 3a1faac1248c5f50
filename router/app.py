"""The router's ASGI app: the table feed (informers), the shared request path, and the front doors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from controlplane.settings import StoreSettings
from controlplane.store.base import ConfigStore
from controlplane.store.factory import open_store
from controlplane.store.keys import KeySpace
from router import native_api, ollama_api, openai_api
from router.core import RouterCore
from router.feed import TableFeed
from router.metrics import BreakerStates, RouterMetrics
from router.table import RouteTable


def create_app(settings: StoreSettings, *, store: ConfigStore | None = None) -> HotPath:
    """The router on the configured store (``store`` overrides it: tests)."""
    registry = CollectorRegistry()
    the_store = store or open_store(settings)
    feed = TableFeed(the_store, KeySpace(settings.namespace), idle_timeout_s=settings.idle_timeout_s)
    core = RouterCore(lambda: feed.table, metrics=RouterMetrics(registry))
    registry.register(BreakerStates(core.live))

    def capacity(table: RouteTable) -> None:
        nodes = {n.name: n for ns in table.nodes.values() for n in ns}
        slots = {m: sum(n.max_parallel for n in ns) for m, ns in table.nodes.items()}
        core.live.set_capacity({name: n.limit for name, n in nodes.items()}, slots)

    feed.add_listener(capacity)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await core.forwarder.close()
            if store is None:
                await the_store.close()

    async def healthz(_r: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_r: Request) -> Response:
        ready = feed.synced
        body = {"ready": ready, "revision": feed.table.revision, "models": len(feed.table.models)}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(_r: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def door(path: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            return await ollama_api.forward(core, request, path)

        return handler

    async def native(request: Request) -> Response:
        return await native_api.route(core, request)

    def openai_door(front: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            return await openai_api.forward(core, request, front)

        return handler

    routes = [
        Route("/api/chat", door("/api/chat"), methods=["POST"]),
        Route("/api/generate", door("/api/generate"), methods=["POST"]),
        Route("/api/embed", door("/api/embed"), methods=["POST"]),
        Route("/api/tags", lambda _r: ollama_api.tags(core), methods=["GET"]),
        Route("/api/ps", lambda _r: ollama_api.ps(core), methods=["GET"]),
        Route("/api/version", lambda _r: ollama_api.version(), methods=["GET"]),
        Route("/api/v1/route", native, methods=["POST"]),
        *(Route(front, openai_door(front), methods=["POST"]) for front in openai_api.KINDS),
        Route("/v1/models", lambda _r: openai_api.models(core), methods=["GET"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.core, app.state.feed = core, feed
    hot: dict[str, Callable[[Request], Awaitable[Response]]] = {
        "/api/chat": door("/api/chat"), "/api/generate": door("/api/generate"), "/api/embed": door("/api/embed"),
        **{front: openai_door(front) for front in openai_api.KINDS},
    }  # fmt: skip
    return HotPath(app, hot)


class HotPath:
    """Sends the data-path POSTs straight to their handler, past Starlette's routing and middleware
    (~0.2 ms a request here); everything else, lifespan included, goes to the Starlette app. The
    handlers map their own errors (router/errors.py), so no middleware is needed on this path."""

    def __init__(self, app: Starlette, hot: dict[str, Callable[[Request], Awaitable[Response]]]) -> None:
        self.app, self._hot = app, hot
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._hot.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)
