"""``llmtune monitor``: the performance monitor as a process of its own, without the REST API.

It runs what a control plane with the ``monitor`` role runs (the same ``Core`` and ``Monitor``
subsystem) when ``LLMTUNE_MONITOR__REDIS_URL`` is set: the outcome
consumer, the stream trimmer, the judge and the experiment guardrails, as the leader of the same
``monitor`` election (so it may run beside control planes that also have the monitor on; one of
them leads). It serves ``/healthz`` (the configuration informer is synced) and ``/metrics`` on
``LLMTUNE_MONITOR__HOST``/``__PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api.metrics import install_informer_metrics
from controlplane.runtime.core import Core
from controlplane.runtime.subsystems import Monitor
from controlplane.settings import Settings
from controlplane.store.informer import Informer

log = logging.getLogger("monitor")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: SIGTERM stops the monitor, which stops the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def create_app(informer: Informer, registry: CollectorRegistry) -> Starlette:
    async def healthz(_r: Request) -> Response:
        ok = informer.synced
        return JSONResponse({"ok": ok}, status_code=200 if ok else 503)

    async def metrics(_r: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])


async def serve(settings: Settings) -> None:
    if not settings.monitor.redis_url:
        raise SystemExit("set LLMTUNE_MONITOR__REDIS_URL: the monitor reads the routers' outcome stream from that Redis")
    core = Core(settings)  # the same core as a control plane's: store, informers, audit log, configuration service
    registry = CollectorRegistry()
    install_informer_metrics(registry, {"config": core.informers.config})
    monitor = Monitor(core, loops=True, registry=registry)
    server = _Server(uvicorn.Config(create_app(core.informers.config, registry), host=settings.monitor.host,
                                    port=settings.monitor.port, log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=2))  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[object]] = []
    try:
        await core.start()
        await monitor.start()
        tasks = [asyncio.create_task(server.serve()), asyncio.create_task(stop.wait())]
        gc.freeze()  # start-up objects live as long as the process
        log.warning("monitor started; /healthz and /metrics on %s:%d", settings.monitor.host, settings.monitor.port)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        server.should_exit = True
        for task in tasks:
            task.cancel()
        try:
            async with asyncio.timeout(settings.api.shutdown_grace_s):
                await asyncio.gather(*tasks, return_exceptions=True)
                await monitor.close()  # the monitor resigns its leadership on the way out
                await core.close()
        except TimeoutError:
            log.warning("stopping took over %.0f s: exiting anyway", settings.api.shutdown_grace_s)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(Settings()))
