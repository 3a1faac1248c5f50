"""The router's Ollama door against the official ``ollama`` client's types: chat, generate and
embed, whole and streamed, plain, with tools and with a format schema, from an Ollama node
(passed through) and from a static OpenAI-compatible upstream (translated both ways); what the
upstream cannot be asked is a 400 naming the field."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import jsonschema
import ollama
import orjson
import pytest

from tests.conformance.cases import ASK, FORECAST_SCHEMA, OPENAI_TOOLS, RESULT, WEATHER_PARAMS, run_tool
from tests.conformance.conftest import UPSTREAMS, Stack

pytestmark = pytest.mark.etcd
USER = [{"role": "user", "content": ASK}]
KINDS: dict[str, dict[str, Any]] = {
    "plain": {"options": {"num_predict": 6, "stop": ["never"], "seed": 7, "temperature": 0.2}},
    "tools": {"tools": OPENAI_TOOLS},
    "schema": {"format": FORECAST_SCHEMA},
    "json": {"format": "json"},
}


def _calls(message: ollama.Message) -> list[tuple[str, dict[str, Any]]]:
    return [(c.function.name, dict(c.function.arguments)) for c in message.tool_calls or []]


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_whole_and_streamed_answers_are_ollama_types_and_agree(stack: Stack, model: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as c:
        for kind, extra in KINDS.items():
            body = {"model": model, "messages": USER, **extra}
            whole = await c.post("/api/chat", json=body | {"stream": False})
            assert whole.status_code == 200, (kind, whole.text)
            one = ollama.ChatResponse.model_validate(whole.json())
            streamed = await c.post("/api/chat", json=body | {"stream": True})
            lines = [ollama.ChatResponse.model_validate(orjson.loads(line)) for line in streamed.text.splitlines() if line]
            assert lines[-1].done and not any(line.done for line in lines[:-1]), kind
            text = "".join(line.message.content or "" for line in lines)
            calls = [call for line in lines for call in _calls(line.message)]
            assert (text, calls) == (one.message.content or "", _calls(one.message)), kind  # the same content and tool calls
            assert (lines[-1].eval_count, lines[-1].prompt_eval_count) == (one.eval_count, one.prompt_eval_count), kind
            assert lines[-1].done_reason == one.done_reason, kind
            if kind == "tools":
                assert calls and calls[0][0] == "get_weather" and not text
                jsonschema.validate(calls[0][1], WEATHER_PARAMS)  # an object, as Ollama clients expect
            elif kind == "schema":
                jsonschema.validate(orjson.loads(text), FORECAST_SCHEMA)
            elif kind == "json":
                assert isinstance(orjson.loads(text), dict)
            else:
                assert one.done_reason == "length" and one.eval_count == 6


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_generate_and_embed_are_ollama_types(stack: Stack, model: str) -> None:
    client = ollama.AsyncClient(host=stack.url)
    done = await client.generate(model=model, prompt="def add(a, b):", suffix="\n", options={"num_predict": 3})
    assert done.done and done.response and done.eval_count == 3 and done.done_reason == "length"
    parts = [
        p async for p in await client.generate(model=model, prompt="def add(a, b):", options={"num_predict": 3}, stream=True)
    ]
    assert "".join(p.response for p in parts) == done.response and parts[-1].eval_count == 3
    shaped = await client.generate(model=model, prompt="a forecast", format=FORECAST_SCHEMA)
    jsonschema.validate(orjson.loads(shaped.response), FORECAST_SCHEMA)
    embedded = await client.embed(model="embedder", input=["a b", "c"], dimensions=16)
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 16


@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_loop_with_the_official_client(stack: Stack, model: str, stream: bool) -> None:
    client = ollama.AsyncClient(host=stack.url)
    messages: list[Any] = [{"role": "system", "content": "You answer with tools."}, *USER]
    for turn in range(2):
        if stream:
            parts = [p async for p in await client.chat(model=model, messages=messages, tools=OPENAI_TOOLS, stream=True)]
            calls = [c for p in parts for c in p.message.tool_calls or []]
            message = ollama.Message(
                role="assistant", content="".join(p.message.content or "" for p in parts), tool_calls=calls or None
            )
        else:
            message = (await client.chat(model=model, messages=messages, tools=OPENAI_TOOLS)).message
        if turn == 1:
            assert not message.tool_calls and RESULT in (message.content or ""), message
            break
        assert message.tool_calls, message
        messages.append(message)  # the assistant's message as the client parsed it, sent back as is
        for call in message.tool_calls:
            result = run_tool(call.function.name, dict(call.function.arguments))
            messages.append({"role": "tool", "tool_name": call.function.name, "content": result})
    if model == "hosted":  # the OpenAI-compatible upstream got OpenAI's shapes: ids that pair call and result, JSON text
        sent = stack.engine.openai_requests[-1]["messages"]
        call = sent[2]["tool_calls"][0]
        assert call["type"] == "function" and orjson.loads(call["function"]["arguments"])["unit"] in ("celsius", "fahrenheit")
        assert sent[3] == {"role": "tool", "content": RESULT, "tool_call_id": call["id"]}


async def test_requests_reach_an_openai_upstream_translated(stack: Stack) -> None:
    gif = base64.b64encode(b"GIF89a" + bytes(10)).decode()
    client = ollama.AsyncClient(host=stack.url)
    messages = [{"role": "user", "content": "what is this?", "images": [gif]}]
    options = {"num_predict": 4, "stop": ["zzz"], "seed": 5, "temperature": 0.3, "num_ctx": 4096}  # num_ctx: the server's own
    answer = await client.chat(model="hosted", messages=messages, options=options, format=FORECAST_SCHEMA, tools=OPENAI_TOOLS)
    assert answer.done
    sent = stack.engine.openai_requests[-1]
    assert sent["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/gif;base64,{gif}"}}
    assert (sent["max_tokens"], sent["stop"], sent["seed"], sent["temperature"]) == (4, ["zzz"], 5, 0.3)
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": FORECAST_SCHEMA}}
    assert "num_ctx" not in sent
    tool = sent["tools"][0]  # as the ollama client sent it (its Tool type keeps fewer schema keywords)
    assert (
        tool["type"] == "function" and tool["function"]["name"] == "get_weather" and tool["function"]["parameters"]["properties"]
    )


REFUSED = [
    ("/api/chat", {"think": True}, "think"),
    ("/api/chat", {"options": {"top_k": 20}}, "options.top_k"),
    ("/api/chat", {"format": "yaml"}, "format"),
    ("/api/generate", {"system": "be terse"}, "system"),
    ("/api/generate", {"context": [1, 2, 3]}, "context"),
    (
        "/api/chat",
        {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_name": "f", "content": "r"}]},
        "messages[1]",
    ),
]


@pytest.mark.parametrize(("path", "extra", "field"), REFUSED)
async def test_what_an_openai_upstream_cannot_take_is_a_400_naming_the_field(
    stack: Stack, path: str, extra: dict[str, Any], field: str
) -> None:
    ask: dict[str, Any] = {"messages": USER} if path == "/api/chat" else {"prompt": "hi"}
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as c:
        refused = await c.post(path, json={"model": "hosted", "stream": False, **ask, **extra})
        assert refused.status_code == 400 and field in refused.json()["error"], refused.text
        if field not in ("format", "messages[1]"):  # an Ollama node takes what the OpenAI API has no word for
            served = await c.post(path, json={"model": "chat", "stream": False, **ask, **extra})
            assert served.status_code == 200, served.text


async def test_both_listings_name_the_same_models(stack: Stack) -> None:
    import openai

    names = sorted(m.model or "" for m in (await ollama.AsyncClient(host=stack.url).list()).models)
    ids = sorted(m.id for m in (await openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused").models.list()).data)
    assert names == ids == ["chat", "embedder", "hosted"]
    resp = await stack.fleet.api.post("/api/v1/keys", json={"name": "only-chat", "tenant": "t", "models": ["chat"]})
    secret = resp.json()["secret"]
    await stack.fleet.until(lambda: "only-chat" in stack.fleet.router.feed.keys, timeout_s=5)
    keyed = ollama.AsyncClient(host=stack.url, headers={"Authorization": f"Bearer {secret}"})
    keyed_oai = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=secret)
    assert [m.model for m in (await keyed.list()).models] == [m.id for m in (await keyed_oai.models.list()).data] == ["chat"]
