"""Run simulated Ollama nodes: in-process (tests, benchmarks) or as a process for the local demo.

``python -m tests.sim --port 11500 --count 2`` serves two nodes on ports 11500 and 11501; the
OLLAMA_* server settings and SIM_* timings are read from the environment, as Ollama reads its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

import uvicorn

from tests.sim.app import create_app
from tests.sim.engine import Engine, SimSettings


class SimServer:
    """One simulated node served by uvicorn inside the running event loop; stop and start it
    again on the same port to simulate an outage (the engine, i.e. the node's disk, survives)."""

    def __init__(self, port: int, *, settings: SimSettings | None = None, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.engine = Engine(settings)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        config = uvicorn.Config(
            create_app(self.engine), host=self.host, port=self.port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"simulated Ollama on port {self.port} did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server, self._task = None, None


async def serve(port: int, count: int, host: str) -> None:
    settings = SimSettings.from_env(os.environ)
    servers = [SimServer(port + i, settings=settings, host=host) for i in range(count)]
    for server in servers:
        await server.start()
        print(f"simulated Ollama listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.gather(*(server.stop() for server in servers))  # at once: 51 nodes one by one took over 10 s


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--port", type=int, default=11500)
    parser.add_argument("--count", type=int, default=1, help="nodes to serve, on consecutive ports")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port, args.count, args.host))
