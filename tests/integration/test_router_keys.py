"""API keys end to end: created through the control plane's API, checked by a router that requires
them, through all three front doors with the official ``ollama`` and ``openai`` clients; allow-lists,
tenants, revocation under traffic, rotation grace and expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from controlplane.store.keys import KeySpace
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc, route_doc

pytestmark = pytest.mark.etcd

CONFIG = [
    model_doc("small", tag="llama3.2:1b", ctx=8192),
    model_doc("coder", tag="qwen2.5-coder:7b", caps=["chat", "code"], ctx=32768),
    route_doc("chat", "small", match={"model_aliases": ["chat"]}),
    route_doc("team-b", "coder", match={"tenants": ["team-b"]}, priority=10),
]
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def fleet(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[tuple[Fleet, str]]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane()
    await f.add_node("node-0")
    assert (await f.api.post("/api/v1/config:apply", json={"objects": CONFIG})).status_code == 200
    url = await f.start_router(auth="required")
    secret = await create(f, "probe", tenant="ops")

    async def routable() -> bool:
        async with httpx.AsyncClient(base_url=url, headers={"x-api-key": secret}) as c:
            resp = await c.get("/api/tags")
            return resp.status_code == 200 and len(resp.json()["models"]) == 2

    await f.eventually(routable, timeout_s=15)
    yield f, url
    await f.close()


async def create(f: Fleet, name: str, **spec: Any) -> str:
    resp = await f.api.post("/api/v1/keys", json={"name": name, **spec})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["secret"].startswith(body["prefix"] + "_") and "hash" not in resp.text
    await f.until(lambda: name in f.router.feed.keys, timeout_s=5)  # the router's watch has delivered it
    return str(body["secret"])


async def status(url: str, secret: str | None, *, model: str = "chat", headers: dict[str, str] | None = None) -> int:
    sent = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with httpx.AsyncClient(base_url=url) as c:
        body = {"model": model, "messages": HELLO, "stream": False, "options": {"num_predict": 1}}
        return (await c.post("/api/chat", json=body, headers={**sent, **(headers or {})})).status_code


async def test_every_door_refuses_without_a_key_and_serves_with_one(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    with pytest.raises(ollama.ResponseError) as no_key:
        await ollama.AsyncClient(host=url).chat(model="chat", messages=HELLO)
    assert no_key.value.status_code == 401 and "API key is required" in str(no_key.value)
    with pytest.raises(openai.AuthenticationError) as bad_key:
        await openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="llmk_00000000_nope").chat.completions.create(
            model="chat", messages=HELLO  # type: ignore[arg-type]
        )
    assert bad_key.value.code == "invalid_api_key"
    async with httpx.AsyncClient(base_url=url) as c:
        native = await c.post("/api/v1/route", json={"model": "chat", "prompt": "hi"})
        assert native.status_code == 401 and native.headers["content-type"] == "application/problem+json"
        assert native.headers["www-authenticate"].startswith("Bearer")
        assert (await c.get("/v1/models")).status_code == 401 and (await c.get("/healthz")).status_code == 200

    secret = await create(f, "svc-a", tenant="team-a")
    answer = await ollama.AsyncClient(host=url, headers={"Authorization": f"Bearer {secret}"}).chat(model="chat", messages=HELLO)
    assert answer.done and answer.message.content
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secret)
    done = await client.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)  # type: ignore[arg-type]
    assert done.choices[0].message.content
    stream = await client.chat.completions.create(model="chat", messages=HELLO, stream=True)  # type: ignore[arg-type]
    assert [c async for c in stream]
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": secret}) as c:
        routed = await c.post("/api/v1/route", json={"model": "chat", "prompt": "hi", "dry_run": True})
        assert routed.status_code == 200 and routed.json()["decision"]["model"] == "small"


async def test_a_key_uses_only_its_models_routes_and_tenants(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    only_chat = await create(f, "only-chat", tenant="team-a", models=["chat"])
    assert await status(url, only_chat) == 200
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'coder'"):
        await openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=only_chat).chat.completions.create(
            model="coder", messages=HELLO  # type: ignore[arg-type]
        )
    with pytest.raises(ollama.ResponseError) as denied:
        await ollama.AsyncClient(host=url, headers={"Authorization": f"Bearer {only_chat}"}).chat(model="coder", messages=HELLO)
    assert denied.value.status_code == 403 and "may not use model 'coder'" in str(denied.value)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {only_chat}"}) as c:
        assert [m["id"] for m in (await c.get("/v1/models")).json()["data"]] == []  # 'chat' is an alias, not a Model
        native = await c.post("/api/v1/route", json={"model": "coder", "prompt": "hi"})
        assert native.status_code == 403 and native.json()["title"] == "Permission denied"

    route_only = await create(f, "route-only", tenant="team-a", routes=["chat"])
    assert await status(url, route_only) == 200
    assert await status(url, route_only, model="coder") == 403  # matches no route: only '*' allows that

    # The tenant is the key's: a bare x-tenant header cannot pick team-b's route
    plain = await create(f, "plain", tenant="team-a")
    assert await status(url, plain, model="chat", headers={"x-tenant": "team-b"}) == 403
    acting = await create(f, "gateway", tenant="gw", act_for=["team-*"])
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {acting}", "x-tenant": "team-b"}) as c:
        resp = await c.post("/api/chat", json={"model": "chat", "messages": HELLO, "stream": False})
        assert resp.status_code == 200 and resp.headers["x-route-name"] == "team-b"


async def test_revocation_reaches_the_router_under_traffic(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    secret = await create(f, "doomed", tenant="team-a")
    seen: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as c:
            while not stop.is_set():
                body = {"model": "chat", "messages": HELLO, "stream": False, "options": {"num_predict": 1}}
                seen.append((time.monotonic(), (await c.post("/api/chat", json=body)).status_code))

    tasks = [asyncio.create_task(traffic()) for _ in range(4)]
    await f.until(lambda: len(seen) > 20, timeout_s=10)
    assert (await f.api.delete("/api/v1/keys/doomed")).status_code == 204
    revoked = time.monotonic()
    await f.until(lambda: any(s == 401 for t, s in seen if t > revoked), timeout_s=5)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    first = min(t for t, s in seen if s == 401)
    assert {s for _, s in seen} <= {200, 401}  # nothing failed half-way
    assert all(s == 401 for t, s in seen if t > first + 0.05)  # once refused, refused (requests sent after it)
    assert first - revoked < 1.0
    assert (await f.api.delete("/api/v1/keys/doomed")).status_code == 404


async def test_rotation_keeps_the_old_secret_for_its_grace_and_expiry_ends_a_key(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    old = await create(f, "rotating", tenant="team-a")
    resp = await f.api.post("/api/v1/keys/rotating:rotate", json={"grace_s": 1.5})
    assert resp.status_code == 200 and resp.json()["previous_valid_until"]
    new = resp.json()["secret"]

    async def accepted() -> bool:
        return await status(url, new) == 200

    await f.eventually(accepted, timeout_s=5)
    assert await status(url, old) == 200
    await asyncio.sleep(1.6)
    assert await status(url, old) == 401 and await status(url, new) == 200

    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    short = await create(f, "short-lived", tenant="team-a", expires_at=soon)
    await asyncio.sleep(1.1)
    assert await status(url, short) == 401

    listed = (await f.api.get("/api/v1/keys")).json()["items"]
    names = {k["name"] for k in listed}
    assert {"probe", "rotating", "short-lived", "llmtune-internal"} <= names and "hash" not in str(listed)
    bad = await f.api.post("/api/v1/keys", json={"name": "Bad Name", "tenant": "t"})
    assert bad.status_code == 422
    dup = await f.api.post("/api/v1/keys", json={"name": "rotating", "tenant": "t"})
    assert dup.status_code == 409


async def test_the_playground_chats_with_the_persons_key_only(fleet: tuple[Fleet, str]) -> None:
    """The UI's playground goes through the router with the key the person gives, streams the
    answer with the router's decision, and never lends the control plane's own key."""
    f, _url = fleet
    secret = await create(f, "playground", tenant="ops")
    body = {"model": "chat", "messages": HELLO, "options": {"num_predict": 4}}
    async with f.api.stream("POST", "/api/v1/playground/chat", json=body, headers={"X-Router-Key": secret}) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
        assert answer.headers["x-route-model"] == "small" and answer.headers["x-route-name"] == "chat"
        assert answer.headers["x-route-node"] == "node-0" and float(answer.headers["x-route-decision-us"]) > 0
        lines = [line async for line in answer.aiter_lines() if line]
    assert len(lines) > 1 and '"done":true' in lines[-1].replace(" ", "")
    for _ in range(3):  # a page that leaves at once: its chat is closed all the same
        async with f.api.stream("POST", "/api/v1/playground/chat", json=body, headers={"X-Router-Key": secret}) as left:
            assert left.status_code == 200
    playground = f.control_plane_runtime().playground
    assert playground is not None
    await f.until(lambda: playground.streams == 0, timeout_s=5)  # every chat's slot is given back
    missing = await f.api.post("/api/v1/playground/chat", json=body)
    assert missing.status_code == 422 and "x-router-key" in missing.text.lower()  # no key: nothing is lent
    wrong = await f.api.post("/api/v1/playground/chat", json=body, headers={"X-Router-Key": "llmk_00000000_nope"})
    assert wrong.status_code == 401 and wrong.headers["content-type"] == "application/problem+json"
    assert (await f.api.delete("/api/v1/keys/playground")).status_code == 204
    await f.until(lambda: "playground" not in f.router.feed.keys, timeout_s=5)
    revoked = await f.api.post("/api/v1/playground/chat", json=body, headers={"X-Router-Key": secret})
    assert revoked.status_code == 401 and revoked.json()["title"] == "Refused by the router"
