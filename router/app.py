"""The router as a process: the table feed (informers), the shared request path, the front doors,
and the HTTP server (router/http.py) that serves them."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controlplane.store.base import ConfigStore
from controlplane.store.factory import open_store
from controlplane.store.keys import KeySpace
from controlplane.store.settings import StoreSettings
from controlplane.store.view_metrics import InvalidObjectsCollector
from router import ollama_api, openai_api
from router.admission import AdmissionQueue
from router.auth import Authenticator, Caller, KeyRing, Mode, Unauthenticated
from router.call import Door
from router.core import RouterCore
from router.errors import Dialect, render_error
from router.feed import TableFeed
from router.http import Handler, HttpServer, Incoming, Limits, Reply, json_reply
from router.limits import Limiter, OnRedisDown
from router.load import LoadReporter
from router.metrics import BreakerStates, RouterMetrics
from router.native_api import NativeDoor
from router.ollama_api import OllamaDoor
from router.openai_api import OpenAIDoor
from router.outcomes import RedisOutcomeSink
from router.table import RouteTable
from router.tracing import Spans
from router.upstream import MAX_WHOLE_BYTES
from schemas.apikey import ApiKey, KeyBudgets


class RouterApp:
    """Everything the router runs, started and stopped together."""

    def __init__(self, settings: StoreSettings, *, store: ConfigStore | None = None, limits: Limits | None = None,
                 outcomes_redis_url: str | None = None, judge_sample: float = 0.0,
                 max_answer_bytes: int = MAX_WHOLE_BYTES, outcomes_max_age_s: float = 900,
                 name: str | None = None, auth: Mode = "required", pepper: bytes | None = None,
                 limits_redis_url: str | None = None, limits_on_redis_down: OnRedisDown = "local",
                 otlp_endpoint: str | None = None) -> None:  # fmt: skip
        """``auth``: required and optional need ``pepper`` (the API keys' server-side secret);
        ``limits_redis_url``: where keys' rate limits and budgets are counted (see router/limits.py)."""
        if auth != "off" and pepper is None:
            raise ValueError(f"LLMTUNE_ROUTER__AUTH={auth} needs the API keys' pepper: set LLMTUNE_KEYS__PEPPER_FILE "
                             "(the same as the control plane's), or LLMTUNE_ROUTER__AUTH=off")  # fmt: skip
        self.registry = CollectorRegistry()
        self._own_store = store is None
        self.store = store or open_store(settings)
        keys = KeySpace(settings.namespace)
        self.feed = TableFeed(self.store, keys, idle_timeout_s=settings.idle_timeout_s)
        self.outcomes = None
        if outcomes_redis_url:
            self.outcomes = RedisOutcomeSink(outcomes_redis_url, registry=self.registry, max_age_s=outcomes_max_age_s)
        self.auth = Authenticator(auth)
        self._pepper = pepper
        self.limiter = None
        if auth != "off":
            self.limiter = Limiter(limits_redis_url, registry=self.registry, routers=lambda: self.load.routers,
                                   tenant_budgets=self._tenant_budgets, on_redis_down=limits_on_redis_down)  # fmt: skip
        self.queue = AdmissionQueue(registry=self.registry, models_of=lambda node: self.feed.table.held.get(node, ()))
        self.spans = Spans(otlp_endpoint) if otlp_endpoint else None
        self.core = RouterCore(lambda: self.feed.table, metrics=RouterMetrics(self.registry), sink=self.outcomes,
                               judge_sample=judge_sample, max_answer_bytes=max_answer_bytes, auth=self.auth,
                               limiter=self.limiter, queue=self.queue, spans=self.spans)  # fmt: skip
        self.core.live.on_release = self.queue.freed
        self.load = LoadReporter(self.store, keys, name or f"{socket.gethostname()}-{os.getpid()}",
                                 in_flight=self.core.live.in_flight_by_node, draining=self.feed.draining,
                                 by_model=self.core.live.in_flight_by_model, generated=self.core.live.generated_by_model,
                                 queue=self.queue.figures)  # fmt: skip
        self._load_task: asyncio.Task[None] | None = None
        self._served: set[str] = set()  # models with a node in the last table
        self.registry.register(BreakerStates(self.core.live))
        self.registry.register(InvalidObjectsCollector(self.feed.view))
        self.feed.add_listener(self._capacity)
        self.feed.add_key_listener(self._keys)
        self.server = HttpServer(self.routes(), limits=limits)
        self._feed_task: asyncio.Task[None] | None = None

    def _capacity(self, table: RouteTable) -> None:
        nodes = {n.name: n for ns in table.nodes.values() for n in ns}
        slots = {m: sum(n.max_parallel for n in ns) for m, ns in table.nodes.items()}
        self.core.live.set_capacity({name: n.limit for name, n in nodes.items()}, slots)
        for model, count in slots.items():  # requests that waited for a model's first replica may go now
            if model not in self._served and self.queue.waiting(model):
                self.queue.wake(model, count)
        self._served = set(slots)

    def _tenant_budgets(self, tenant: str) -> KeyBudgets | None:
        found = self.feed.tenant_budgets.get(tenant)
        return found.budgets if found is not None else None

    def _keys(self, keys: dict[str, ApiKey]) -> None:
        self.auth.ring = KeyRing(keys, self._pepper)  # one reference swap: requests in flight keep the ring they read

    def routes(self) -> dict[str, Mapping[str, Handler]]:
        core = self.core

        def serve(door: Door) -> Mapping[str, Handler]:
            return {"POST": lambda request: core.serve(door, request)}

        def get(reply: Callable[[], Reply]) -> Mapping[str, Handler]:
            async def handler(_request: Incoming) -> Reply:
                return reply()

            return {"GET": handler}

        def listing(reply: Callable[[RouteTable, Caller | None], Reply], dialect: Dialect) -> Mapping[str, Handler]:
            """A listing of what the caller may ask for (with keys required, only for a valid key)."""

            async def handler(request: Incoming) -> Reply:
                try:
                    caller = self.auth.authenticate(request.headers)
                except Unauthenticated as exc:
                    return render_error(exc, dialect)
                return reply(core.table, caller)

            return {"GET": handler}

        return {
            **{path: serve(OllamaDoor(path)) for path in ("/api/chat", "/api/generate", "/api/embed")},
            **{front: serve(OpenAIDoor(front)) for front in openai_api.KINDS},
            "/api/v1/route": serve(NativeDoor()),
            "/api/tags": listing(ollama_api.tags, "ollama"),
            "/api/ps": listing(ollama_api.ps, "ollama"),
            "/api/version": get(ollama_api.version),
            "/v1/models": listing(openai_api.models, "openai"),
            "/healthz": get(lambda: json_reply({"status": "ok"})),
            "/readyz": get(self._ready),
            "/metrics": get(lambda: Reply(body=generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)),
        }

    def _ready(self) -> Reply:
        ready = self.feed.synced
        body = {"ready": ready, "revision": self.feed.table.revision, "models": len(self.feed.table.models),
                "invalid_objects": self.feed.view.report(),
                "store_held": self.feed.config.held}  # fmt: skip
        return json_reply(body, 200 if ready else 503)

    async def start(self, host: str, port: int) -> int:
        """Start the feed and listen; returns the port (``port=0`` picks a free one)."""
        self._feed_task = asyncio.create_task(self.feed.run())
        self._load_task = asyncio.create_task(self.load.run())
        if self.outcomes is not None:
            self.outcomes.start()
        return await self.server.start(host, port)

    async def close(self, *, grace_s: float = 10.0) -> None:
        await self.server.close(grace_s=grace_s)
        for task in (self._feed_task, self._load_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.load.close()
        await self.core.forwarder.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.spans is not None:
            await asyncio.to_thread(self.spans.close)  # the last batch of spans goes out
        if self.outcomes is not None:
            await self.outcomes.close()
        if self._own_store:
            await self.store.close()
