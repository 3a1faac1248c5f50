"""The router end to end: etcd, the control plane, agents on simulated nodes, and the official
``ollama`` client pointed at the router; failover when a node dies; changes apply to the next request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import ollama
import openai
import orjson
import pytest

from controlplane.store.keys import KeySpace
from router.core import Outcome
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc, route_doc
from tests.sim.engine import Fault

pytestmark = pytest.mark.etcd

CONFIG = [
    model_doc("small", tag="llama3.2:1b", ctx=8192, options={"temperature": 0.1}),
    model_doc("coder", tag="qwen2.5-coder:7b", caps=["chat", "code"], ctx=32768),
    model_doc("embedder", tag="nomic-embed-text", caps=["embed"], ctx=8192),
    route_doc("chat", "small", match={"model_aliases": ["chat"]}, fallbacks=["coder"]),
]


@pytest.fixture
async def fleet(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[tuple[Fleet, str]]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane()
    for i in range(2):
        await f.add_node(f"node-{i}")
    resp = await f.api.post("/api/v1/config:apply", json={"objects": CONFIG})
    assert resp.status_code == 200, resp.text

    async def ready() -> bool:
        models = (await f.api.get("/api/v1/models/status")).json()["models"]
        return all(m["ready_nodes"] == 2 for m in models)

    await f.eventually(ready, timeout_s=15)
    url = await f.start_router()

    async def routable() -> bool:
        async with httpx.AsyncClient(base_url=url) as c:
            return len((await c.get("/api/tags")).json()["models"]) == 3

    await f.eventually(routable, timeout_s=10)
    yield f, url
    await f.close()


async def served(f: Fleet, client: ollama.AsyncClient, model: str, *, timeout_s: float) -> None:
    """Wait until the router lists ``model`` (it has reached the configuration that adds it)."""

    async def listed() -> bool:
        return model in {m.model for m in (await client.list()).models}

    await f.eventually(listed, timeout_s=timeout_s)


async def test_official_ollama_client_through_the_router(fleet: tuple[Fleet, str]) -> None:
    _f, url = fleet
    client = ollama.AsyncClient(host=url)
    answer = await client.chat(model="chat", messages=[{"role": "user", "content": "hello there"}])
    assert answer.done and answer.message.content and answer.model == "llama3.2:1b"
    parts = [p async for p in await client.chat(model="chat", messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert len(parts) > 2 and parts[-1].done and not parts[0].done
    generated = await client.generate(model="coder", prompt="def add(a, b):")
    assert generated.response and generated.done
    vectors = (await client.embed(model="embedder", input=["a b", "c d"])).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 64
    assert {m.model for m in (await client.list()).models} == {"small", "coder", "embedder"}
    with pytest.raises(ollama.ResponseError) as missing:
        await client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404 and "no model has that name" in missing.value.error
    with pytest.raises(ollama.ResponseError) as not_embedding:
        await client.embed(model="small", input="x")
    assert not_embedding.value.status_code == 503 and "lacks embed" in not_embedding.value.error
    async with httpx.AsyncClient(base_url=url) as raw:
        refused = (await raw.get("/metrics")).text
    assert 'llmtune_router_rejected_total{reason="unknown_model"} 1.0' in refused
    assert 'llmtune_router_rejected_total{reason="no_route"} 1.0' in refused

    async with httpx.AsyncClient(base_url=url) as raw:
        resp = await raw.post(
            "/api/chat", json={"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": False}
        )
        assert resp.headers["x-route-model"] == "small" and resp.headers["x-route-name"] == "chat"
        assert resp.headers["x-route-node"] in ("node-0", "node-1") and float(resp.headers["x-route-decision-us"]) > 0
        bad = await raw.post("/api/chat", content=b"{not json")
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
        msgs = [{"role": "user", "content": "x"}]
        odd = await raw.post("/api/chat", json={"model": "chat", "messages": msgs, "options": [1]})
        assert odd.status_code == 400 and "'options' must be an object" in odd.json()["error"]
        cost = await raw.post("/api/chat", json={"model": "chat", "messages": msgs}, headers={"x-route-max-cost": "cheap"})
        assert cost.status_code == 400 and "x-route-max-cost" in cost.json()["error"]
        numbers = await raw.post("/api/embed", json={"model": "chat", "input": 5})  # was a 500: joined without a check
        assert numbers.status_code == 400 and "'input' must be a string or a list of strings" in numbers.text
        numbers = await raw.post("/v1/embeddings", json={"model": "chat", "input": 5})
        assert numbers.status_code == 400 and numbers.json()["error"]["param"] == "input"
        dry = await raw.post("/api/v1/route", json={"prompt": "def f(): pass", "model": "chat", "dry_run": True})
        decision = dry.json()["decision"]
        assert dry.status_code == 200 and decision["model"] == "small" and decision["fallbacks"]
        native = await raw.post("/api/v1/route", json={"messages": [{"role": "user", "content": "hi"}], "model": "coder"})
        assert native.status_code == 200 and native.json()["answer"]["done"] and native.json()["decision"]["model"] == "coder"
        invalid = await raw.post("/api/v1/route", json={"model": "chat"})
        assert invalid.status_code == 422 and "either 'messages'" in invalid.json()["detail"]


async def test_failover_when_a_node_dies_mid_traffic(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    client = ollama.AsyncClient(host=url)
    errors: list[BaseException] = []

    async def traffic(n: int) -> None:
        for _ in range(n):
            try:
                await client.chat(model="chat", messages=[{"role": "user", "content": "ping"}])
            except Exception as exc:
                errors.append(exc)

    task = asyncio.create_task(traffic(60))
    await asyncio.sleep(0.2)
    await f.sims["node-1"].stop()  # dies: connections refused until its agent's status says so
    await task
    assert errors == []  # requests that had not started streaming were retried on node-0
    used = [c for c in f.sims["node-0"].engine.calls if c[1] == "/api/chat"]
    assert len(used) >= 30


async def test_route_change_applies_to_the_next_request(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    client = ollama.AsyncClient(host=url)
    assert (await client.chat(model="chat", messages=[{"role": "user", "content": "a"}])).model == "llama3.2:1b"
    changed = route_doc("chat", "coder", match={"model_aliases": ["chat"]})
    resp = await f.api.put("/api/v1/config/routes/chat", json=changed)
    assert resp.status_code == 200, resp.text

    async def switched() -> bool:
        return (await client.chat(model="chat", messages=[{"role": "user", "content": "b"}])).model == "qwen2.5-coder:7b"

    await f.eventually(switched, timeout_s=5)

    # A tune reaches the next request's options (model defaults <- request): no restart anywhere.
    await client.chat(model="small", messages=[{"role": "user", "content": "c"}])
    assert {s.engine.last_options.get("temperature") for s in f.sims.values()} >= {0.1}
    resp = await f.api.put("/api/v1/tune", json={"model": "small", "options": {"temperature": 0.9}})
    assert resp.status_code in (200, 202), resp.text

    async def tuned() -> bool:
        await client.chat(model="small", messages=[{"role": "user", "content": "d"}])
        return any(s.engine.last_options.get("temperature") == 0.9 for s in f.sims.values())

    await f.eventually(tuned, timeout_s=5)


async def test_official_openai_client_through_the_router(fleet: tuple[Fleet, str]) -> None:
    _f, url = fleet
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
    done = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello"}], max_tokens=4)
    assert done.choices[0].message.content and done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 4
    stream = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage is not None and chunks[-2].choices[0].finish_reason == "stop"
    completion = await client.completions.create(model="coder", prompt="def add(a, b):", max_tokens=3)
    assert completion.choices[0].text and completion.choices[0].finish_reason == "length"
    emb = await client.embeddings.create(model="embedder", input=["a b", "c d"])  # base64 by default in this client
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 64
    assert {m.id for m in (await client.models.list()).data} == {"small", "coder", "embedder"}
    with pytest.raises(openai.NotFoundError, match="no model has that name"):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="messages: List should have at least 1 item"):
        await client.chat.completions.create(model="chat", messages=[])


async def test_busy_or_stalled_node_is_skipped_before_the_first_byte(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    quick = route_doc("quick", "small", match={"model_aliases": ["quick"]}, timeouts={"first_token_ms": 300, "total_ms": 5000})
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [quick]})).status_code == 200
    client = ollama.AsyncClient(host=url)

    async def routed() -> bool:
        try:
            await client.chat(model="quick", messages=[{"role": "user", "content": "x"}])
        except ollama.ResponseError:
            return False
        return True

    await f.eventually(routed, timeout_s=5)
    async with httpx.AsyncClient(base_url=url) as raw:
        dry = await raw.post("/api/v1/route", json={"prompt": "x", "model": "quick", "dry_run": True})
        first = dry.json()["decision"]["node"]
        f.sims[first].engine.faults.append(Fault("/api/chat", status=503, message="server busy", times=1))
        ask = {"model": "quick", "messages": [{"role": "user", "content": "x"}], "stream": False}
        resp = await raw.post("/api/chat", json=ask)
        assert resp.status_code == 200 and resp.headers["x-route-attempts"] == "2"  # one node said busy: the other answered
        for sim in f.sims.values():
            sim.engine.faults.clear()
            sim.engine.faults.append(Fault("/api/chat", stall_s=2.0, times=-1, mid_stream=True))
        # Streamed: the route's first_token_ms (300) bounds each attempt; both nodes stall for 2 s.
        stalled = await raw.post("/api/chat", json={"model": "quick", "messages": [{"role": "user", "content": "x"}]})
        assert stalled.status_code == 504 and "no upstream answered in time" in stalled.json()["error"]
        metrics = (await raw.get("/metrics")).text
        assert 'llmtune_router_retries_total{route="quick"}' in metrics
        assert "llmtune_router_tokens_per_second_count" in metrics and "llmtune_router_decision_seconds_count" in metrics
        overhead = next(line for line in metrics.splitlines() if line.startswith("llmtune_router_overhead_seconds_count"))
        assert float(overhead.split()[-1]) >= 1  # the whole answer above: the router's own share of its time


async def test_client_leaving_mid_stream_is_not_a_node_failure(fleet: tuple[Fleet, str]) -> None:
    f, url = fleet
    for sim in f.sims.values():
        sim.engine.settings.token_s = 0.05  # a slow answer, so the client can leave in the middle
    async with httpx.AsyncClient(base_url=url) as raw:
        for _ in range(6):  # more than the breaker's 5 consecutive failures
            async with raw.stream(
                "POST", "/api/chat", json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}
            ) as r:
                async for _line in r.aiter_lines():
                    break  # the client goes away after the first token
        await asyncio.sleep(0.2)
        metrics = (await raw.get("/metrics")).text
    assert 'status="cancelled"' in metrics and "llmtune_router_circuit_state{" not in metrics


async def test_openai_compatible_upstream_behind_both_doors(fleet: tuple[Fleet, str]) -> None:
    """A Model served by a static OpenAI-compatible endpoint (here a node's own /v1 API, as vLLM would be)."""
    f, url = fleet
    hosted = model_doc("hosted", tag="llama3.2:1b", provider="openai", endpoint=f"{f.sims['node-0'].url}/v1")
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [hosted]})).status_code == 200
    client = ollama.AsyncClient(host=url)

    await served(f, client, "hosted", timeout_s=5)
    answer = await client.chat(model="hosted", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3})
    assert answer.done and answer.message.content and answer.done_reason == "length" and answer.eval_count == 3
    parts = [p async for p in await client.chat(model="hosted", messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert parts[-1].done and "".join(p.message.content or "" for p in parts).strip()
    assert (await client.generate(model="hosted", prompt="say hi")).response
    oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
    done = await oai.chat.completions.create(model="hosted", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert done.choices[0].message.content and done.choices[0].finish_reason == "length"
    outcomes: list[Outcome] = []
    f.router.core.sink = type("Collect", (), {"record": lambda _self, o: outcomes.append(o)})()
    async with httpx.AsyncClient(base_url=url) as raw:  # the native door too, whole and streamed
        native = await raw.post("/api/v1/route", json={"model": "hosted", "messages": [{"role": "user", "content": "hi"}]})
        tagged = await raw.post("/api/v1/route", json={"model": "hosted", "prompt": "hi"}, headers={"x-request-id": "req-42"})
        assert tagged.headers["x-request-id"] == "req-42" and native.headers["x-request-id"] not in ("", "req-42")
        await asyncio.sleep(0.05)  # outcomes are recorded once the answer is out
        assert [(o.request_id, o.model, o.node, o.status) for o in outcomes[-2:]] == [
            (native.headers["x-request-id"], "hosted", "endpoint", "ok"),
            ("req-42", "hosted", "endpoint", "ok"),
        ]
        assert native.status_code == 200 and native.json()["answer"]["message"]["content"]
        assert native.json()["decision"]["node"] == "endpoint" and native.headers["x-route-node"] == "endpoint"
        ask = {"model": "hosted", "prompt": "say hi", "stream": True}
        async with raw.stream("POST", "/api/v1/route", json=ask) as resp:
            lines = [orjson.loads(line) async for line in resp.aiter_lines() if line.strip()]
        assert lines[-1]["done"] and "".join(line.get("response", "") for line in lines).strip()
        assert resp.headers["x-route-node"] == "endpoint" and resp.headers["x-route-attempts"] == "1"
    assert ("POST", "/v1/chat/completions", "llama3.2:1b") in list(f.sims["node-0"].engine.calls)
    assert ("POST", "/v1/completions", "llama3.2:1b") in list(f.sims["node-0"].engine.calls)


async def test_openai_compatible_upstream_stream_usage_or_counted_chunks(fleet: tuple[Fleet, str]) -> None:
    """Streams from a static endpoint carry token counts: its usage when it honours
    ``stream_options.include_usage``, else its chunks counted; in the Ollama door's last line, in
    the outcome records and in the tokens/s metric, through both doors."""
    f, url = fleet
    sim = f.sims["node-0"]
    hosted = model_doc("hosted", tag="llama3.2:1b", provider="openai", endpoint=f"{sim.url}/v1")
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [hosted]})).status_code == 200
    client = ollama.AsyncClient(host=url)

    await served(f, client, "hosted", timeout_s=5)
    outcomes: list[Outcome] = []
    f.router.core.sink = type("Collect", (), {"record": lambda _self, o: outcomes.append(o)})()
    ask = [{"role": "user", "content": "tell me a story"}]
    oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
    for honours in (True, False):  # a server with usage in streams, then one without (older llama.cpp)
        sim.engine.settings.openai_stream_usage = honours
        parts = [p async for p in await client.chat(model="hosted", messages=ask, stream=True, options={"num_predict": 5})]
        assert parts[-1].done and parts[-1].eval_count == 5 and (parts[-1].prompt_eval_count or 0) > 0, (honours, parts[-1])
        await asyncio.sleep(0.05)  # outcomes are recorded once the answer is out
        assert (outcomes[-1].model, outcomes[-1].tokens) == ("hosted", 5), honours
        assert outcomes[-1].tokens_per_s is not None and outcomes[-1].tokens_per_s > 0
        # the OpenAI door passes the stream through as the client asked for it, and counts it too
        chunks = [c async for c in await oai.chat.completions.create(model="hosted", messages=ask, max_tokens=4, stream=True)]
        assert all(c.usage is None for c in chunks) and sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) == 4
        await asyncio.sleep(0.05)
        assert outcomes[-1].tokens == 4, honours
    async with httpx.AsyncClient(base_url=url) as raw:
        metrics = (await raw.get("/metrics")).text
    assert 'llmtune_router_tokens_per_second_count{model="hosted",node="endpoint"' in metrics


async def test_a_prompt_past_the_effective_context_is_a_400_through_both_doors(fleet: tuple[Fleet, str]) -> None:
    """Ollama would drop the start of the prompt silently: the router refuses it instead, naming
    the estimated tokens and the largest context a candidate runs with (num_ctx, else the node's
    default: 4096 on the simulated Ollama 0.12.6), and never raises num_ctx itself."""
    f, url = fleet
    long = model_doc("long", tag="llama3.1:8b", ctx=131072, options={"num_ctx": 8192})  # as llama3.1-8b in the examples
    route = route_doc("long-chat", "long", match={"model_aliases": ["long-chat"]})
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [long, route]})).status_code == 200
    client = ollama.AsyncClient(host=url)

    await served(f, client, "long", timeout_s=15)
    prompt = "word " * 16_000  # ~20,000 tokens
    with pytest.raises(ollama.ResponseError) as refused:
        await client.chat(model="long-chat", messages=[{"role": "user", "content": prompt}])
    assert refused.value.status_code == 400 and "~20001 tokens" in refused.value.error
    assert "runs with is 8192" in refused.value.error
    oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as too_long:
        await oai.chat.completions.create(model="long-chat", messages=[{"role": "user", "content": prompt}])
    assert too_long.value.code == "context_length_exceeded" and too_long.value.param == "messages"
    assert "8192" in too_long.value.message
    # a model with no num_ctx runs with the node's default, 4096 here: a 6k prompt does not fit it either
    with pytest.raises(ollama.ResponseError) as small:
        await client.generate(model="coder", prompt="word " * 5000)
    assert small.value.status_code == 400 and "OLLAMA_CONTEXT_LENGTH" in small.value.error
    short = await client.chat(model="long-chat", messages=[{"role": "user", "content": "word " * 4000}])
    assert short.done and (short.prompt_eval_count or 0) > 0


async def test_node_dying_mid_answer_ends_the_stream_with_an_error(fleet: tuple[Fleet, str]) -> None:
    """After the first byte an answer is committed to its node: if the node dies then, streaming
    clients get Ollama's error line (not a body that merely stops), non-streaming ones a 502."""
    f, url = fleet
    for sim in f.sims.values():
        sim.engine.faults.append(Fault("/api/chat", drop_after=2, times=-1))
    ask = {"model": "chat", "messages": [{"role": "user", "content": "tell me a story"}]}
    async with httpx.AsyncClient(base_url=url) as raw:
        async with raw.stream("POST", "/api/chat", json=ask) as resp:
            lines = [orjson.loads(line) async for line in resp.aiter_lines() if line.strip()]
        assert resp.status_code == 200 and [bool(line.get("message")) for line in lines[:2]] == [True, True]
        assert "broke off the answer" in lines[-1]["error"] and not any(line.get("done") for line in lines)
        whole = await raw.post("/api/chat", json={**ask, "stream": False})
        assert whole.status_code == 502 and "every upstream tried failed" in whole.json()["error"]
    client = ollama.AsyncClient(host=url)
    with pytest.raises(ollama.ResponseError, match="broke off the answer"):
        async for _part in await client.chat(model="chat", messages=ask["messages"], stream=True):
            pass


async def test_client_leaving_before_the_answer_releases_the_node(fleet: tuple[Fleet, str]) -> None:
    """A client that gives up while the node is still working (a timeout on a non-streaming call)
    frees its slot on that node: no in-flight count is left behind to make the node look busy."""
    f, url = fleet
    for sim in f.sims.values():
        sim.engine.settings.token_s = 0.2  # a slow answer: the client leaves long before it
    ask = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": False}
    async with httpx.AsyncClient(base_url=url, timeout=0.3) as raw:
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout):
                await raw.post("/api/chat", json=ask)
    live = f.router.core.live
    await f.until(lambda: all(live.in_flight(name) == 0 for name in f.sims), timeout_s=5,
                  what=lambda: {name: live.in_flight(name) for name in f.sims})  # fmt: skip
    async with httpx.AsyncClient(base_url=url) as raw:
        metrics = (await raw.get("/metrics")).text
    assert "llmtune_router_circuit_state{" not in metrics  # leaving is not the node's failure
    cancelled = [line for line in metrics.splitlines() if line.startswith("llmtune_router_requests_total{") and 'node="-"' in line
                 and 'status="cancelled"' in line]  # fmt: skip
    assert len(cancelled) == 1 and cancelled[0].endswith(" 3.0")  # counted, before any node answered


async def test_whole_answers_past_the_read_buffer_arrive(fleet: tuple[Fleet, str]) -> None:
    """A non-streamed answer larger than the upstream reader's 1 MiB high-water mark (a normal
    embedding batch) arrives whole, through both doors, and the node's breaker stays closed."""
    _f, url = fleet
    inputs = [f"document number {i} about routing" for i in range(1000)]
    async with httpx.AsyncClient(base_url=url, timeout=20) as raw:
        for _ in range(2):
            resp = await raw.post("/api/embed", json={"model": "embedder", "input": inputs})
            assert resp.status_code == 200, resp.text[:300]
            assert len(resp.content) > 1 << 20 and len(resp.json()["embeddings"]) == 1000
        oai = await raw.post("/v1/embeddings", json={"model": "embedder", "input": inputs})
        assert oai.status_code == 200 and len(oai.json()["data"]) == 1000


async def test_a_whole_answer_past_its_limit_is_a_clear_502(fleet: tuple[Fleet, str]) -> None:
    """Whole answers have a size limit of their own: past it the client gets a 502 saying so, at
    once, and the node is not blamed (the next request is a 502 again, not a 503 from a breaker)."""
    f, _url = fleet
    await f.stop_router()
    url = await f.start_router(max_answer_bytes=256 << 10)
    inputs = [f"document number {i} about routing" for i in range(1000)]
    async with httpx.AsyncClient(base_url=url, timeout=20) as raw:
        for _ in range(3):
            resp = await raw.post("/api/embed", json={"model": "embedder", "input": inputs})
            assert resp.status_code == 502 and "MAX_ANSWER_BYTES" in resp.json()["error"], resp.text[:300]
        small = await raw.post("/api/embed", json={"model": "embedder", "input": inputs[:10]})
        assert small.status_code == 200 and len(small.json()["embeddings"]) == 10


async def test_client_options_are_validated_with_a_400_naming_the_option(fleet: tuple[Fleet, str]) -> None:
    _f, url = fleet
    ask = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    async with httpx.AsyncClient(base_url=url) as raw:
        for options, named in (({"num_ctx": "abc"}, "options.num_ctx"), ({"temperature": -1}, "options.temperature"),
                               ({"mirostat": 5}, "options.mirostat"), ({"stop": "x"}, "options.stop")):  # fmt: skip
            resp = await raw.post("/api/chat", json=ask | {"options": options})
            assert resp.status_code == 400 and named in resp.json()["error"], (options, resp.text)
        oai = await raw.post("/v1/chat/completions", json={"model": "chat", "messages": ask["messages"], "temperature": 9})
        assert oai.status_code == 400 and "temperature" in oai.json()["error"]["message"]
        fine = await raw.post("/api/chat", json=ask | {"options": {"temperature": 0.2, "num_predict": 3, "unknown_knob": 1}})
        assert fine.status_code == 200


async def test_clients_cannot_override_what_the_operator_owns(fleet: tuple[Fleet, str]) -> None:
    """By default a client's keep_alive (evict the model for everyone), load-time options (num_gpu,
    num_ctx: a reload) and raw are dropped and num_predict is bounded; the response says so in
    x-llmtune-overridden. A Model can let clients set more, or refuse instead of dropping."""
    f, url = fleet
    ask = {"model": "small", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    warm = [s for s in f.sims.values() if "llama3.2:1b" in s.engine.runners]
    assert len(warm) == 2
    async with httpx.AsyncClient(base_url=url, timeout=10) as raw:
        hostile = await raw.post("/api/chat", json=ask | {"keep_alive": 0, "options": {"num_gpu": 0, "num_predict": -1}})
        assert hostile.status_code == 200, hostile.text
        assert hostile.headers["x-llmtune-overridden"] == "keep_alive, options.num_gpu, options.num_predict=8192"
        assert hostile.json()["load_duration"] == 0  # no reload for num_gpu
        assert all("llama3.2:1b" in s.engine.runners for s in warm)  # keep_alive 0 did not evict it
        plain = await raw.post("/api/chat", json=ask | {"options": {"temperature": 0.5}})
        assert plain.status_code == 200 and "x-llmtune-overridden" not in plain.headers
        oai = await raw.post("/v1/chat/completions", json={"model": "small", "messages": ask["messages"], "max_tokens": 10})
        assert oai.status_code == 200 and "x-llmtune-overridden" not in oai.headers  # max_tokens is num_predict: allowed

        lenient = model_doc("small", tag="llama3.2:1b", ctx=8192, options={"temperature": 0.1}, client={"fields": ["keep_alive"]})
        assert (await f.api.put("/api/v1/config/models/small", json=lenient)).status_code == 200
        await asyncio.sleep(0.5)  # the router's table follows
        evict = await raw.post("/api/chat", json=ask | {"keep_alive": 0})
        assert evict.status_code == 200 and "x-llmtune-overridden" not in evict.headers
        node = f.sims[evict.headers["x-route-node"]]
        assert "llama3.2:1b" not in node.engine.runners  # this model's operator lets clients unload it

        strict = model_doc("small", tag="llama3.2:1b", ctx=8192, client={"refuse": True, "bounds": {"temperature": {"max": 1}}})
        assert (await f.api.put("/api/v1/config/models/small", json=strict)).status_code == 200
        await asyncio.sleep(0.5)
        refused = await raw.post("/api/chat", json=ask | {"options": {"temperature": 2}})
        assert refused.status_code == 400 and "does not let clients set options.temperature=1" in refused.json()["error"]
        assert (await raw.post("/api/chat", json=ask | {"options": {"temperature": 0.9}})).status_code == 200
        metrics = (await raw.get("/metrics")).text
    assert 'llmtune_router_rejected_total{reason="client_policy"} 1.0' in metrics
    bad = model_doc("small", tag="llama3.2:1b", ctx=8192, client={"options": ["num_gpux"]})
    resp = await f.api.put("/api/v1/config/models/small", json=bad)
    assert resp.status_code == 422 and "spec.client.options[0]" in resp.text and "num_gpu" in resp.text, resp.text


async def test_max_attempts_counts_every_attempt_and_retries_back_off(fleet: tuple[Fleet, str]) -> None:
    """``max_attempts: 2`` makes two attempts in all (it made three), and the retry waits
    ``backoff_ms`` (with jitter) first."""
    f, url = fleet
    route = route_doc("chat", "small", match={"model_aliases": ["chat"]}, fallbacks=["coder"],
                      retries={"max_attempts": 2, "backoff_ms": 300})  # fmt: skip
    assert (await f.api.put("/api/v1/config/routes/chat", json=route)).status_code == 200
    await asyncio.sleep(0.5)  # the router's table follows
    for sim in f.sims.values():
        sim.engine.faults.append(Fault("/api/chat", status=503, message="server busy", times=-1))
        sim.engine.calls.clear()
    ask = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": False}
    async with httpx.AsyncClient(base_url=url, timeout=10) as raw:
        started = asyncio.get_running_loop().time()
        resp = await raw.post("/api/chat", json=ask)
        elapsed = asyncio.get_running_loop().time() - started
    assert resp.status_code == 502 and resp.json()["error"].count("HTTP 503") == 2, resp.text
    chats = sum(1 for sim in f.sims.values() for call in sim.engine.calls if call[1] == "/api/chat")
    assert chats == 2 and 0.3 <= elapsed < 2.0, (chats, elapsed)


async def test_an_upstream_that_stalls_mid_stream_is_ended_after_the_idle_timeout(fleet: tuple[Fleet, str]) -> None:
    """After the first byte, a stream that sends nothing for ``timeouts.idle_ms`` ends cleanly with
    an error (Ollama: a last object with ``error``; OpenAI: an error event) and frees the slot."""
    f, url = fleet
    route = route_doc("chat", "small", match={"model_aliases": ["chat"]}, timeouts={"idle_ms": 300})
    assert (await f.api.put("/api/v1/config/routes/chat", json=route)).status_code == 200
    await asyncio.sleep(0.5)
    for sim in f.sims.values():
        sim.engine.faults.append(Fault("/api/chat", pause_after=2, pause_s=30, times=-1))
    ask = {"model": "chat", "messages": [{"role": "user", "content": "tell me a story"}]}
    async with httpx.AsyncClient(base_url=url, timeout=10) as raw:
        started = asyncio.get_running_loop().time()
        async with raw.stream("POST", "/api/chat", json=ask) as resp:
            lines = [orjson.loads(line) async for line in resp.aiter_lines() if line.strip()]
        assert asyncio.get_running_loop().time() - started < 5
        assert "error" in lines[-1] and "idle_ms" in lines[-1]["error"] and len(lines) >= 2
        async with raw.stream("POST", "/v1/chat/completions", json=ask | {"stream": True}) as resp:
            events = [line async for line in resp.aiter_lines() if line.startswith("data:")]
        assert any("idle_ms" in e and '"error"' in e for e in events[-2:]), events[-3:]
        metrics = (await raw.get("/metrics")).text
    assert 'status="error"' in metrics
