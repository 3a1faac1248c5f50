"""``python -m agents.sidecar``: run one agent (settings from ``LLMTUNE_AGENT__*`` / ``LLMTUNE_STORE__*``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import uvicorn

from agents.sidecar.agent import Agent
from agents.sidecar.http import create_app
from agents.sidecar.settings import AgentSettings
from controlplane.store.factory import open_store
from controlplane.store.keys import KeySpace

#: The most an agent takes to stop after SIGTERM (a supervised Ollama gets 10 s of it).
SHUTDOWN_S = 15.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: SIGTERM is the agent's to handle (uvicorn would
    re-raise it once it stops serving, killing the process before a supervised Ollama is stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve() -> None:
    settings = AgentSettings()
    store = open_store(settings.store)
    agent = Agent(settings.agent, store, keys=KeySpace(settings.store.namespace), idle_timeout_s=settings.store.idle_timeout_s)
    gc.freeze()  # imports' objects live as long as the process: collections need not walk them
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(agent.run()), asyncio.create_task(stop.wait())]
    server: uvicorn.Server | None = None
    if settings.agent.port:
        config = uvicorn.Config(
            create_app(agent), host=settings.agent.host, port=settings.agent.port, log_level="warning", access_log=False,
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve()))
    logging.getLogger(__name__).warning("agent %s managing Ollama at %s", settings.agent.node, settings.agent.ollama_url)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        if server is not None:
            server.should_exit = True
        for task in tasks:
            task.cancel()  # the agent stops a supervised Ollama (SIGTERM, then SIGKILL) and revokes its lease
        try:
            async with asyncio.timeout(SHUTDOWN_S):  # an unreachable store must not hold the exit
                await asyncio.gather(*tasks, return_exceptions=True)
                await store.close()
        except TimeoutError:
            logging.getLogger(__name__).warning("stopping took over %.0f s: exiting anyway", SHUTDOWN_S)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
