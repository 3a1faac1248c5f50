"""Usage end to end: requests with API keys through the three doors, their outcome records through
Redis into the monitor's SQL, and the usage report by key, tenant, model and route, equal to the
tokens the simulator reported; the router's token counters; ``llmctl usage``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import redis

from controlplane.store.keys import KeySpace
from schemas.monitor import OUTCOME_STREAM
from tests.fixtures.fleet import ADMIN, ROOT, Fleet
from tests.fixtures.services import EtcdServer, RedisServer
from tests.helpers import model_doc, route_doc

pytestmark = pytest.mark.etcd
HELLO = [{"role": "user", "content": "hello there, tell me something"}]


async def test_usage_sums_equal_what_the_upstream_reported(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path, redis_server: RedisServer
) -> None:
    redis.Redis.from_url(redis_server.url).delete(OUTCOME_STREAM)
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    await fleet.start_control_plane(monitor={"redis_url": redis_server.url, "bucket_s": 60})
    try:
        await fleet.add_node("node-0")
        objects = [model_doc("small", tag="llama3.2:1b", ctx=8192), model_doc("embedder", tag="nomic-embed-text", caps=["embed"]),
                   route_doc("chat", "small", match={"model_aliases": ["chat"]})]  # fmt: skip
        assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
        url = await fleet.start_router(outcomes_redis_url=redis_server.url, auth="required")
        secrets = {}
        for name, tenant in (("svc-a", "team-a"), ("svc-b", "team-b")):
            resp = await fleet.api.post("/api/v1/keys", json={"name": name, "tenant": tenant})
            secrets[name] = resp.json()["secret"]
        await fleet.until(lambda: {"svc-a", "svc-b"} <= set(fleet.router.feed.keys), timeout_s=5)

        async def routable() -> bool:
            async with httpx.AsyncClient(headers={"x-api-key": secrets["svc-a"]}) as c:
                return len((await c.get(f"{url}/api/tags")).json()["models"]) == 2

        await fleet.eventually(routable, timeout_s=15)
        reported = {"svc-a": [0, 0], "svc-b": [0, 0]}  # prompt, completion, as the answers said
        async with httpx.AsyncClient(base_url=url, timeout=20) as c:
            for i in range(3):
                a = await c.post("/api/chat", json={"model": "chat", "messages": HELLO, "stream": False,
                                                    "options": {"num_predict": 3 + i}},
                                 headers={"Authorization": f"Bearer {secrets['svc-a']}"})  # fmt: skip
                reported["svc-a"][0] += a.json()["prompt_eval_count"]
                reported["svc-a"][1] += a.json()["eval_count"]
            streamed = await c.post("/api/generate", json={"model": "small", "prompt": "once upon a time", "stream": True},
                                    headers={"x-api-key": secrets["svc-b"]})  # fmt: skip
            last = json.loads(streamed.text.strip().splitlines()[-1])
            reported["svc-b"][0] += last["prompt_eval_count"]
            reported["svc-b"][1] += last["eval_count"]
            native = await c.post("/api/v1/route", json={"model": "small", "prompt": "hi"},
                                  headers={"x-api-key": secrets["svc-b"]})  # fmt: skip
            reported["svc-b"][0] += native.json()["answer"]["prompt_eval_count"]
            reported["svc-b"][1] += native.json()["answer"]["eval_count"]
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secrets["svc-b"])
        done = await client.chat.completions.create(model="small", messages=HELLO, max_tokens=4)  # type: ignore[arg-type]
        assert done.usage is not None
        reported["svc-b"][0] += done.usage.prompt_tokens
        reported["svc-b"][1] += done.usage.completion_tokens
        emb = await client.embeddings.create(model="embedder", input=["a b c"])
        reported["svc-b"][0] += emb.usage.prompt_tokens

        async def folded() -> bool:
            resp = await fleet.api.get("/api/v1/usage", params={"group_by": "key", "window": "1h"})
            seen.append(resp.text)
            return sum(r["requests"] for r in resp.json()["rows"]) == 7

        seen: list[str] = []

        try:
            await fleet.eventually(folded, timeout_s=20)
        except TimeoutError:
            entries = redis.Redis.from_url(redis_server.url).xrange(OUTCOME_STREAM)
            raise AssertionError(f"{seen[-1]}\n{entries}") from None
        by_key = {r["group"]: r for r in (await fleet.api.get("/api/v1/usage?group_by=key&window=1h")).json()["rows"]}
        for name, (prompt, completion) in reported.items():
            row = by_key[name]
            assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion), (name, row, reported)
            assert row["total_tokens"] == prompt + completion and row["estimated_requests"] == 0
        assert by_key["svc-a"]["requests"] == 3 and by_key["svc-b"]["requests"] == 4

        async def requests_by(group: str) -> dict[str, int]:
            rows = (await fleet.api.get("/api/v1/usage", params={"group_by": group, "window": "1h"})).json()["rows"]
            return {r["group"]: r["requests"] for r in rows}

        assert await requests_by("tenant") == {"team-a": 3, "team-b": 4}
        assert await requests_by("model") == {"small": 6, "embedder": 1}
        assert await requests_by("route") == {"chat": 3, "": 4}
        ranged = await fleet.api.get("/api/v1/usage", params={"group_by": "tenant", "from": "2020-01-01T00:00:00Z",
                                                               "to": "2020-01-02T00:00:00Z"})  # fmt: skip
        assert ranged.status_code == 200 and ranged.json()["rows"] == []
        bad = await fleet.api.get("/api/v1/usage", params={"group_by": "colour"})
        assert bad.status_code == 422
        both = await fleet.api.get("/api/v1/usage", params={"window": "1h", "from": "2020-01-01T00:00:00Z"})
        assert both.status_code == 400

        async with httpx.AsyncClient() as c:
            metrics = (await c.get(f"{url}/metrics")).text
        prompt_a = reported["svc-a"][0]
        assert f'llmtune_tokens_total{{direction="prompt",model="small",tenant="team-a"}} {float(prompt_a)}' in metrics

        env = {**os.environ, "LLMCTL_URL": str(fleet.api.base_url), "LLMCTL_TOKEN": ADMIN["Authorization"][7:],
               "LLMCTL_CONFIG": str(tmp_path / "llmctl.yaml"), "COLUMNS": "200"}  # fmt: skip
        shown = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cli.main", "usage", "--by", "tenant", "--window", "1h"], env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0 and "team-a" in shown.stdout and "team-b" in shown.stdout, shown.stderr
    finally:
        await fleet.close()
