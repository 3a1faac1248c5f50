"""The router's OpenAI-compatible door against the official ``openai`` client's types: chat,
completions and embeddings, whole and streamed, plain, with tools and with structured outputs,
from an Ollama node (translated) and from a static OpenAI-compatible upstream (passed through);
what cannot be translated is a 400 naming the field."""

from __future__ import annotations

import array
import base64
from typing import Any

import httpx
import jsonschema
import openai
import orjson
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.conformance.cases import (
    ASK,
    FORECAST_SCHEMA,
    OPENAI_TOOLS,
    RESULT,
    WEATHER_PARAMS,
    Forecast,
    assembled,
    run_tool,
    sse,
)
from tests.conformance.conftest import UPSTREAMS, Stack

pytestmark = pytest.mark.etcd
USER = [{"role": "user", "content": ASK}]
KINDS: dict[str, dict[str, Any]] = {
    "plain": {"max_tokens": 6, "stop": ["never"], "seed": 7, "temperature": 0.2},
    "tools": {"tools": OPENAI_TOOLS, "tool_choice": "auto"},
    "json_schema": {"response_format": {"type": "json_schema",
                                        "json_schema": {"name": "forecast", "schema": FORECAST_SCHEMA, "strict": True}}},
    "json_object": {"response_format": {"type": "json_object"}},
}  # fmt: skip


async def _chat(url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        return await c.post("/v1/chat/completions", json=body)


def _whole(data: dict[str, Any]) -> dict[str, Any]:
    message = ChatCompletion.model_validate(data).choices[0].message
    calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]
    return {"content": message.content or "", "tool_calls": calls, "finish_reason": data["choices"][0]["finish_reason"],
            "usage": data["usage"]}  # fmt: skip


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_whole_and_streamed_answers_are_openai_types_and_agree(stack: Stack, model: str) -> None:
    for kind, extra in KINDS.items():
        body = {"model": model, "messages": USER, **extra}
        whole = await _chat(stack.url, body)
        assert whole.status_code == 200, (kind, whole.text)
        streamed = await _chat(stack.url, body | {"stream": True, "stream_options": {"include_usage": True}})
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        chunks = sse(streamed.text)
        for chunk in chunks:
            ChatCompletionChunk.model_validate(chunk)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"], kind  # the usage in a last chunk of its own
        one, many = _whole(whole.json()), assembled(chunks)
        ids = [c.pop("id") for c in one["tool_calls"] + many["tool_calls"]]
        assert all(isinstance(i, str) and i for i in ids), ids  # every tool call has an id, whole or streamed
        assert one == many, kind  # the same content, tool calls, finish reason and usage
        if kind == "tools":
            assert one["finish_reason"] == "tool_calls" and one["content"] == ""
            call = one["tool_calls"][0]
            assert call["name"] == "get_weather"
            jsonschema.validate(orjson.loads(call["arguments"]), WEATHER_PARAMS)  # a JSON string, as clients expect
        elif kind == "json_schema":
            jsonschema.validate(orjson.loads(one["content"]), FORECAST_SCHEMA)
        elif kind == "json_object":
            assert isinstance(orjson.loads(one["content"]), dict)
        else:
            assert one["finish_reason"] == "length" and one["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_completions_and_embeddings_are_openai_types(stack: Stack, model: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as c:
        done = await c.post("/v1/completions", json={"model": model, "prompt": "def add(a, b):", "max_tokens": 3, "suffix": "\n"})
        assert done.status_code == 200, done.text
        completion = Completion.model_validate(done.json())
        assert completion.choices[0].text and completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 3
        streamed = await c.post("/v1/completions", json={"model": model, "prompt": "def add(a, b):", "max_tokens": 3,
                                                         "stream": True, "stream_options": {"include_usage": True}})  # fmt: skip
        events = sse(streamed.text)
        for event in events[:-1]:  # the SDK's type wants a finish reason that streams (OpenAI's too) only send last
            pending = [c | {"finish_reason": c["finish_reason"] or "stop"} for c in event["choices"]]
            Completion.model_validate(event | {"choices": pending})
        assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == completion.choices[0].text
        assert events[-1]["usage"]["completion_tokens"] == 3
        for encoding in ("float", "base64"):
            emb = await c.post("/v1/embeddings", json={"model": "embedder", "input": ["a b", "c"], "encoding_format": encoding,
                                                       "dimensions": 32})  # fmt: skip
            data = emb.json()
            if encoding == "base64":  # the SDK asks for base64 and decodes it before its type sees the vectors
                data["data"] = [d | {"embedding": list(array.array("f", base64.b64decode(d["embedding"])))} for d in data["data"]]
            parsed = CreateEmbeddingResponse.model_validate(data)
            assert len(parsed.data) == 2 and len(parsed.data[0].embedding) == 32


@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_loop_with_the_official_client(stack: Stack, model: str, stream: bool) -> None:
    """The model asks for a tool, the client runs it and sends the result, the model answers from it."""
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    messages: list[Any] = [{"role": "system", "content": "You answer with tools."}, *USER]
    for turn in range(2):
        if stream:  # the SDK's own accumulator over our chunks
            async with client.chat.completions.stream(model=model, messages=messages, tools=OPENAI_TOOLS) as events:
                answer = await events.get_final_completion()
        else:
            answer = await client.chat.completions.create(model=model, messages=messages, tools=OPENAI_TOOLS)
        choice = answer.choices[0]
        if turn == 1:
            assert choice.finish_reason == "stop" and RESULT in (choice.message.content or ""), choice
            break
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, choice
        messages.append(choice.message)  # the assistant's message as the SDK parsed it, sent back as is
        for call in choice.message.tool_calls:
            args = orjson.loads(call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": run_tool(call.function.name, args)})
    if model == "chat":  # the node got Ollama's shapes: the call's arguments an object, the result named by its tool
        sent = stack.engine.last_request["messages"]
        assert sent[2]["tool_calls"][0]["function"]["arguments"]["unit"] in ("celsius", "fahrenheit")
        assert sent[3]["role"] == "tool" and sent[3]["tool_name"] == "get_weather" and sent[3]["content"] == RESULT
    else:  # the OpenAI-compatible upstream got the conversation as the client sent it
        sent = stack.engine.openai_requests[-1]["messages"]
        assert sent[3]["tool_call_id"] == sent[2]["tool_calls"][0]["id"]


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_structured_outputs_parse_into_the_clients_model(stack: Stack, model: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    parsed = await client.chat.completions.parse(model=model, messages=USER, response_format=Forecast)
    forecast = parsed.choices[0].message.parsed
    assert isinstance(forecast, Forecast) and forecast.city
    if model == "chat":  # the node was given the schema as Ollama's format
        assert stack.engine.last_request["format"]["properties"]["windy"] == {"title": "Windy", "type": "boolean"}


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_sampling_fields_and_images_reach_the_upstream(stack: Stack, model: str) -> None:
    pixel = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
    ]
    body = {"model": model, "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": content}],
            "seed": 3, "stop": "zzz", "max_completion_tokens": 5, "max_tokens": 9, "temperature": 0.5, "top_p": 0.9,
            "presence_penalty": 0.1, "frequency_penalty": 0.2, "user": "end-user-1"}  # fmt: skip
    resp = await _chat(stack.url, body)
    assert resp.status_code == 200, resp.text
    assert ChatCompletion.model_validate(resp.json()).usage.completion_tokens == 5
    if model == "chat":
        sent = stack.engine.last_request
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}
        assert sent["messages"][1] == {"role": "user", "content": "what is this?", "images": [pixel]}
        assert {k: sent["options"][k] for k in ("seed", "stop", "num_predict", "temperature", "top_p")} == {
            "seed": 3, "stop": ["zzz"], "num_predict": 5, "temperature": 0.5, "top_p": 0.9}  # fmt: skip
    else:
        sent = stack.engine.openai_requests[-1]
        assert sent["messages"][1]["content"] == content and sent["seed"] == 3 and sent["max_completion_tokens"] == 5


REFUSED = [
    ({"logprobs": True}, "logprobs", "log probabilities"),
    ({"logit_bias": {"42": 5}}, "logit_bias", "no token bias"),
    ({"n": 2}, "n", "Input should be 1"),
    ({"surprise": 1}, "surprise", "is not a field"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "Field required"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     "messages[0].content[0].image_url.url", "inline base64 data URLs"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_9", "content": "r"}]},
     "messages[1].tool_call_id", "no call has id 'call_9'"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]},
     "messages[0].tool_calls[0].function.arguments", "not JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "param", "says"), REFUSED)
async def test_what_cannot_be_translated_is_a_400_naming_the_field(
    stack: Stack, extra: dict[str, Any], param: str, says: str
) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="chat", messages=USER, extra_body=extra)
    assert refused.value.param == param and says in refused.value.message, refused.value.body
    assert (refused.value.type, refused.value.code) == ("invalid_request_error", None)


async def test_forcing_a_tool_is_refused_by_nodes_and_passed_to_openai_upstreams(stack: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="chat", messages=USER, tools=OPENAI_TOOLS, tool_choice=choice)
        assert refused.value.param == "tool_choice" and "cannot force a tool call" in refused.value.message
        answer = await client.chat.completions.create(model="hosted", messages=USER, tools=OPENAI_TOOLS, tool_choice=choice)
        assert answer.choices[0].message.tool_calls and stack.engine.openai_requests[-1]["tool_choice"] == choice
    answer = await client.chat.completions.create(model="chat", messages=USER, tools=OPENAI_TOOLS, tool_choice="none")
    assert answer.choices[0].finish_reason == "stop" and "tools" not in stack.engine.last_request  # "none": no tools offered
    clock = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    both = [{"role": "user", "content": "the weather, and get_time too"}]
    for parallel, count in ((None, 2), (False, 1)):  # the model asks for two; without parallel calls, the first only
        extra = {} if parallel is None else {"parallel_tool_calls": parallel}
        answer = await client.chat.completions.create(model="chat", messages=both, tools=[*OPENAI_TOOLS, clock], **extra)
        assert [c.function.name for c in answer.choices[0].message.tool_calls or []] == ["get_weather", "get_time"][:count]
        chunks = [c async for c in await client.chat.completions.create(
            model="chat", messages=both, tools=[*OPENAI_TOOLS, clock], stream=True, **extra)]  # fmt: skip
        calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        assert [(t.index, t.function.name) for t in calls] == [(0, "get_weather"), (1, "get_time")][:count]
