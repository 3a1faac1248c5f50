"""The Ollama simulator against the official ``ollama`` Python client: the API shapes agents and
routers rely on, keep_alive semantics, reloads on load-time options, queue limits and faults."""

from __future__ import annotations

import asyncio
import math

import httpx
import ollama
import openai
import pytest

from tests.fixtures.services import free_port
from tests.sim.engine import SimSettings
from tests.sim.server import SimServer


async def test_library_pull_create_show_copy_delete(sim: SimServer) -> None:
    client = ollama.AsyncClient(host=sim.url)
    progress = [p async for p in await client.pull("llama3.1:8b", stream=True)]
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.total and p.completed == p.total for p in progress)
    created = await client.create(
        model="helper", from_="llama3.1:8b", system="Answer briefly.", parameters={"temperature": 0.2, "stop": ["<|end|>"]}
    )
    assert created.status == "success"
    shown = await client.show("helper")
    assert "temperature" in (shown.parameters or "") and '"<|end|>"' in (shown.parameters or "")
    assert 'SYSTEM """Answer briefly."""' in (shown.modelfile or "")
    assert shown.details is not None and shown.details.parent_model == "llama3.1:8b"
    await client.copy("helper", "helper-copy")
    names = {m.model for m in (await client.list()).models}
    assert names == {"llama3.1:8b", "helper:latest", "helper-copy:latest"}
    await client.delete("helper-copy")
    assert "helper-copy:latest" not in {m.model for m in (await client.list()).models}
    with pytest.raises(ollama.ResponseError) as missing:
        await client.pull("missing-model")
    assert "does not exist" in missing.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        await client.show("nope")
    assert unknown.value.status_code == 404


async def test_generate_chat_and_timings(sim: SimServer) -> None:
    client = ollama.AsyncClient(host=sim.url)
    await client.pull("llama3.1:8b")
    first = await client.generate(model="llama3.1:8b", prompt="why is the sky blue", options={"num_predict": 4})
    assert first.done and first.done_reason == "length" and first.eval_count == 4
    assert first.load_duration and first.load_duration > 0 and first.total_duration and first.prompt_eval_count
    warm = await client.generate(model="llama3.1:8b", prompt="again")
    assert warm.done_reason == "stop" and warm.load_duration == 0  # already loaded
    parts = [p async for p in await client.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].eval_duration
    assert "".join(p.message.content or "" for p in parts).strip()
    whole = await client.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}])
    assert whole.message.role == "assistant" and whole.message.content


async def test_keep_alive_and_reload_on_load_options(sim: SimServer) -> None:
    client = ollama.AsyncClient(host=sim.url)
    await client.pull("llama3.1:8b")
    loaded = await client.generate(model="llama3.1:8b", prompt="", keep_alive=-1)
    assert loaded.done_reason == "load"
    ps = (await client.ps()).models
    assert [m.model for m in ps] == ["llama3.1:8b"] and ps[0].expires_at and ps[0].expires_at.year > 2100
    again = await client.generate(model="llama3.1:8b", prompt="x", options={"num_ctx": 8192})
    assert again.load_duration and again.load_duration > 0  # num_ctx changed: reloaded
    assert (await client.ps()).models[0].context_length == 8192
    unloaded = await client.generate(model="llama3.1:8b", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload" and not (await client.ps()).models


async def test_embeddings_are_deterministic_and_share_words(sim: SimServer) -> None:
    client = ollama.AsyncClient(host=sim.url)
    await client.pull("nomic-embed-text")
    texts = ["the cat sat on the mat", "a cat on a mat", "quarterly revenue grew"]
    vectors = (await client.embed(model="nomic-embed-text", input=texts)).embeddings
    again = (await client.embed(model="nomic-embed-text", input=texts[0])).embeddings[0]

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))

    assert list(again) == list(vectors[0])
    assert cos(list(vectors[0]), list(vectors[1])) > cos(list(vectors[0]), list(vectors[2])) + 0.3
    with pytest.raises(ollama.ResponseError):
        await client.generate(model="nomic-embed-text", prompt="embedding models do not generate")


async def test_full_queue_answers_503_and_faults_inject() -> None:
    server = SimServer(free_port(), settings=SimSettings(num_parallel=1, max_queue=1, token_s=0.05))
    await server.start()
    try:
        client = ollama.AsyncClient(host=server.url)
        await client.pull("llama3.1:8b")
        results = await asyncio.gather(
            *(client.generate(model="llama3.1:8b", prompt="busy") for _ in range(4)), return_exceptions=True
        )
        busy = [r for r in results if isinstance(r, ollama.ResponseError) and r.status_code == 503]
        assert busy and len(busy) < 4
        async with httpx.AsyncClient(base_url=server.url) as raw:
            await raw.post("/sim/faults", json={"path": "/api/tags", "status": 500, "message": "disk on fire", "times": 1})
            with pytest.raises(ollama.ResponseError, match="disk on fire"):
                await client.list()
            assert (await client.list()).models  # the fault fired once
            calls = (await raw.get("/sim/calls")).json()
            assert ["GET", "/api/tags", ""] in calls
    finally:
        await server.stop()


async def test_openai_compatible_api_like_ollamas(sim: SimServer) -> None:
    await ollama.AsyncClient(host=sim.url).pull("llama3.2:1b")
    client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="ollama")
    done = await client.chat.completions.create(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert done.choices[0].finish_reason == "length" and done.usage is not None and done.usage.completion_tokens == 2
    chunks = [c async for c in await client.chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}], stream=True)]  # fmt: skip
    assert chunks[-1].choices[0].finish_reason == "stop" and "".join(c.choices[0].delta.content or "" for c in chunks)
    assert [m.id for m in (await client.models.list()).data] == ["llama3.2:1b"]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
