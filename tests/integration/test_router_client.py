"""The control plane's one client of the router (``rag.router_client``), against an Ollama-speaking
server (the simulator stands in for the router): the router's reason in its errors, the retry of
requests that cannot have begun, an unreachable router, and the settings that name it."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from controlplane.settings import Settings
from rag.router_client import RouterClient, RouterError
from tests.fixtures.services import free_port
from tests.sim.server import SimServer

CHAT = {"model": "nope:1b", "messages": [{"role": "user", "content": "hi"}], "stream": False}


async def test_an_error_answer_carries_the_routers_reason(sim: SimServer) -> None:
    client = RouterClient(sim.url, headers={"Authorization": "Bearer key"}, timeout_s=10)
    try:
        with pytest.raises(RouterError) as missing:
            await client.post("/api/chat", CHAT)
        assert missing.value.status == 404 and "nope" in missing.value.reason and "404" in str(missing.value)
        with pytest.raises(RouterError) as streamed:
            await client.stream("/api/chat", {**CHAT, "stream": True})
        assert streamed.value.status == 404
    finally:
        await client.aclose()


async def test_an_unreachable_router_is_tried_three_times_then_named() -> None:
    client = RouterClient(f"http://127.0.0.1:{free_port()}", attempts=3)
    started = time.monotonic()
    with pytest.raises(RouterError) as down:
        await client.post("/api/embed", {"model": "m", "input": ["x"]})
    assert down.value.status is None and "could not be reached" in str(down.value)
    assert time.monotonic() - started >= 0.2  # it waited between its tries
    await client.aclose()


async def test_a_router_coming_back_between_tries_is_reached() -> None:
    port = free_port()
    server = SimServer(port)
    client = RouterClient(f"http://127.0.0.1:{port}", attempts=5)

    async def later() -> None:
        await asyncio.sleep(0.3)
        await server.start()

    starting = asyncio.create_task(later())
    try:
        with pytest.raises(RouterError) as answered:  # refused at first; then the server answers (404 here)
            await client.post("/api/chat", CHAT)
        assert answered.value.status == 404
    finally:
        await starting
        await client.aclose()
        await server.stop()


def test_the_old_router_url_settings_are_refused_with_the_new_name() -> None:
    for group in ("rag", "monitor"):
        with pytest.raises(ValidationError, match="LLMTUNE_ROUTER_CLIENT__URL"):
            Settings(**{group: {"router_url": "http://router:8701"}})  # type: ignore[arg-type]
    assert Settings(router_client={"url": "http://router:8701"}).router_client.url == "http://router:8701"  # type: ignore[arg-type]
