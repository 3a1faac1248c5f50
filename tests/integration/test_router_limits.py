"""Rate limits and budgets of API keys with two router processes sharing a real Redis: exact across
routers, 429 with Retry-After and x-ratelimit-* in each door's dialect, concurrency slots, a budget
that runs out mid-stream, a tenant's budget, and each router's local share while Redis is stopped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from controlplane.store.keys import KeySpace
from deploy.local import processes
from tests.fixtures.fleet import PEPPER, ROOT, Fleet
from tests.fixtures.services import EtcdServer, RedisServer, free_port
from tests.helpers import model_doc
from tests.sim.engine import SimSettings

pytestmark = pytest.mark.etcd
HELLO = [{"role": "user", "content": "hello"}]


def start_routers(etcd: str, keys: KeySpace, redis_url: str, tmp_path: Path, count: int = 2) -> tuple[list[str], list[Any]]:
    urls, procs = [], []
    for i in range(count):
        port = free_port()
        env = {**os.environ, "LLMTUNE_STORE__ENDPOINTS": etcd, "LLMTUNE_STORE__NAMESPACE": keys.namespace,
               "LLMTUNE_ROUTER__PORT": str(port), "LLMTUNE_ROUTER__AUTH": "required", "LLMTUNE_KEYS__PEPPER": PEPPER,
               "LLMTUNE_ROUTER__LIMITS_REDIS_URL": redis_url, "LLMTUNE_ROUTER__NAME": f"router-{i}"}  # fmt: skip
        log = (tmp_path / f"router-{i}.log").open("wb")
        procs.append(processes.spawn([sys.executable, "-m", "router"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        urls.append(f"http://127.0.0.1:{port}")
    return urls, procs


@pytest.fixture
def limits_redis() -> Iterator[RedisServer]:
    server = RedisServer()  # its own: one test stops it
    server.start()
    yield server
    server.close()


@pytest.fixture
async def stack(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path, limits_redis: RedisServer
) -> AsyncIterator[tuple[Fleet, list[str]]]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane()
    await f.add_node("node-0", sim=SimSettings(token_s=0.01, num_parallel=16))
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [model_doc("m", tag="llama3.2:1b")]})).status_code == 200
    urls, procs = start_routers(etcd_server.url, keys, limits_redis.url, tmp_path)
    probe = await key(f, "probe", tenant="ops")

    async def ready() -> bool:
        async with httpx.AsyncClient(headers={"x-api-key": probe}) as c:
            for url in urls:
                try:
                    resp = await c.get(f"{url}/api/tags")
                except httpx.TransportError:
                    return False
                if resp.status_code != 200 or not resp.json()["models"]:
                    return False
        return True

    try:
        await f.eventually(ready, timeout_s=30)
        yield f, urls
    finally:
        processes.stop(procs)
        await f.close()


async def key(f: Fleet, name: str, **spec: Any) -> str:
    resp = await f.api.post("/api/v1/keys", json={"name": name, **spec})
    assert resp.status_code == 201, resp.text
    await asyncio.sleep(0.3)  # the routers' watch delivers it (milliseconds; processes of their own here)
    return str(resp.json()["secret"])


async def chat(url: str, secret: str, *, tokens: int = 1, stream: bool = False) -> httpx.Response:
    body = {"model": "m", "messages": HELLO, "stream": stream, "options": {"num_predict": tokens}}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=30) as c:
        return await c.post(f"{url}/api/chat", json=body)


async def test_requests_per_minute_hold_exactly_across_two_routers(stack: tuple[Fleet, list[str]]) -> None:
    f, urls = stack
    if time.time() % 60 > 50:  # the window is the minute: start the burst inside one
        await asyncio.sleep(61 - time.time() % 60)
    secret = await key(f, "rpm-10", tenant="team-a", limits={"requests_per_minute": 10})
    assert (await chat(urls[0], secret)).status_code == 200
    # the key had room at its last check: the burst's checks run while the requests go upstream,
    # and the answers wait for them (refused ones are cut off upstream)
    answers = await asyncio.gather(*(chat(urls[i % 2], secret) for i in range(23)))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 9 and codes.count(429) == 14, codes
    refused = next(a for a in answers if a.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60 and refused.headers["x-ratelimit-remaining"] == "0"
    left = 60 - time.time() % 60  # the minute's window ends then: Retry-After points there, as does the reset header
    assert abs(int(refused.headers["retry-after"]) - left) <= 2
    assert refused.headers["x-ratelimit-reset"] == refused.headers["retry-after"]
    assert "requests per minute" in refused.json()["error"]
    ok = next(a for a in answers if a.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "10"
    client = openai.AsyncOpenAI(base_url=f"{urls[1]}/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    assert limited.value.code == "rate_limit_exceeded" and limited.value.response.headers["x-ratelimit-limit-requests"] == "10"


async def test_concurrent_requests_are_capped_and_slots_come_back(stack: tuple[Fleet, list[str]]) -> None:
    f, urls = stack
    secret = await key(f, "two-at-once", tenant="team-a", limits={"concurrent": 2})
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=30) as c:
        body = {"model": "m", "messages": HELLO, "stream": True, "options": {"num_predict": 300}}
        async with c.stream("POST", f"{urls[0]}/api/chat", json=body) as one, \
                   c.stream("POST", f"{urls[1]}/api/chat", json=body) as two:  # fmt: skip
            assert one.status_code == two.status_code == 200
            third = await chat(urls[0], secret)
            assert third.status_code == 429 and "concurrent requests" in third.json()["error"]
    await asyncio.sleep(0.3)  # the answers' ends are settled in batches
    assert (await chat(urls[1], secret)).status_code == 200


async def test_a_budget_running_out_mid_stream_finishes_the_answer_then_refuses(stack: tuple[Fleet, list[str]]) -> None:
    f, urls = stack
    secret = await key(f, "small-budget", tenant="team-b", budgets={"tokens_per_day": 8})
    answer = await chat(urls[0], secret, tokens=60, stream=True)  # the simulator answers ~12 tokens for it
    assert answer.status_code == 200 and '"done":true' in answer.text  # the whole answer, past the budget
    await asyncio.sleep(0.3)
    refused = await chat(urls[1], secret)
    assert refused.status_code == 429 and "tokens per day" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) > 60  # until the UTC day ends
    client = openai.AsyncOpenAI(base_url=f"{urls[0]}/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.RateLimitError) as quota:
        await client.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    assert quota.value.code == "insufficient_quota"

    # A tenant's budget is shared by its keys
    first, second = await key(f, "tenant-c-1", tenant="team-c"), await key(f, "tenant-c-2", tenant="team-c")
    resp = await f.api.put("/api/v1/tenants/team-c", json={"tokens_per_day": 8})
    assert resp.status_code == 200 and (await f.api.get("/api/v1/tenants")).json()["items"][0]["tenant"] == "team-c"
    await asyncio.sleep(0.3)
    assert (await chat(urls[0], first, tokens=40)).status_code == 200
    await asyncio.sleep(0.3)
    refused = await chat(urls[1], second)
    assert refused.status_code == 429 and "tenant 'team-c'" in refused.json()["error"]
    assert (await f.api.delete("/api/v1/tenants/team-c")).status_code == 204
    await asyncio.sleep(0.3)
    assert (await chat(urls[1], second)).status_code == 200


async def test_each_router_enforces_its_share_while_redis_is_stopped(
    stack: tuple[Fleet, list[str]], limits_redis: RedisServer
) -> None:
    f, urls = stack
    secret = await key(f, "shared-10", tenant="team-a", limits={"requests_per_minute": 10})

    async def peers_seen() -> bool:  # each router counts the routers reporting load (every 5 s)
        async with httpx.AsyncClient() as c:
            pages = [(await c.get(f"{u}/metrics")).text for u in urls]
        return all("llmtune_router_limits_routers 2.0" in page for page in pages)

    await f.eventually(peers_seen, timeout_s=15)
    if time.time() % 60 > 45:
        await asyncio.sleep(61 - time.time() % 60)
    limits_redis.close()
    codes = [(await chat(urls[0], secret)).status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3, codes  # this router's share: 10 / 2 routers
    async with httpx.AsyncClient() as c:
        assert "llmtune_router_limits_local 1.0" in (await c.get(f"{urls[0]}/metrics")).text
    assert [(await chat(urls[1], secret)).status_code for _ in range(6)] == [200] * 5 + [429]
