"""``python -m agents.sidecar``: run one agent (settings from ``LLMTUNE_AGENT__*`` / ``LLMTUNE_STORE__*``)."""

from __future__ import annotations

import asyncio
import gc
import logging

import uvicorn

from agents.sidecar.agent import Agent
from agents.sidecar.http import create_app
from agents.sidecar.settings import AgentSettings
from controlplane.store.factory import open_store
from controlplane.store.keys import KeySpace


async def main() -> None:
    settings = AgentSettings()
    store = open_store(settings.store)
    agent = Agent(settings.agent, store, keys=KeySpace(settings.store.namespace), idle_timeout_s=settings.store.idle_timeout_s)
    gc.freeze()  # imports' objects live as long as the process: collections need not walk them
    tasks = [asyncio.create_task(agent.run())]
    if settings.agent.port:
        config = uvicorn.Config(
            create_app(agent), host=settings.agent.host, port=settings.agent.port, log_level="warning", access_log=False
        )
        tasks.append(asyncio.create_task(uvicorn.Server(config).serve()))
    logging.getLogger(__name__).warning("agent %s managing Ollama at %s", settings.agent.node, settings.agent.ollama_url)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
