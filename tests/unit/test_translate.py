"""The translations between OpenAI's and Ollama's chat shapes (router/translate.py), the OpenAI
door's request check (schemas/openai.py), and the simulator's schema examples they are tested with."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import pytest

from router import openai_upstream, translate
from router.errors import BadInput
from schemas import openai as wire
from tests.sim.engine import example_of, tool_calls

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(8)).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(8)).decode()


def test_openai_messages_become_ollamas() -> None:
    messages = [
        {"role": "developer", "content": "brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]  # fmt: skip
    out, images = translate.ollama_messages(messages)
    assert images and out == [
        {"role": "system", "content": "brief"},
        {"role": "user", "content": "a\nb", "images": [PNG]},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "content": "done", "tool_name": "f", "tool_call_id": "c1"},
    ]


def _image(url: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}


_BAD_ARGS = {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (_image("http://x/a.png"), "messages[0].content[0].image_url.url"),
        (_image("data:image/png;base64,@@@@"), "messages[0].content[0].image_url.url"),
        ({"role": "tool", "tool_call_id": "nope", "content": "x"}, "messages[0].tool_call_id"),
        (_BAD_ARGS, "messages[0].tool_calls[0].function.arguments"),
    ],
)
def test_what_has_no_ollama_form_names_its_field(message: dict[str, Any], param: str) -> None:
    with pytest.raises(BadInput) as refused:
        translate.ollama_messages([message])
    assert refused.value.param == param


def test_ollama_messages_become_openais_with_ids_that_pair_calls_and_results() -> None:
    calls = [{"function": {"name": "f", "arguments": {"a": 1}}}, {"function": {"name": "g", "arguments": {}}}]
    messages = [
        {"role": "user", "content": "look", "images": [JPEG]},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_name": "g", "content": "G"},  # answered out of order: matched by name
        {"role": "tool", "content": "F"},  # no name: the call still waiting
    ]
    out = translate.openai_messages(messages)
    assert out[0]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}}
    assert out[1]["tool_calls"] == [
        {"id": "call_1_0", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "call_1_1", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    assert [(m["tool_call_id"], m["content"]) for m in out[2:]] == [("call_1_1", "G"), ("call_1_0", "F")]
    with pytest.raises(BadInput, match="no call f is waiting"):
        translate.openai_messages([*messages, {"role": "tool", "tool_name": "f", "content": "again"}])


def test_formats_and_sampling_both_ways() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert translate.ollama_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}) == schema
    assert translate.ollama_format({"type": "json_object"}) == "json" and translate.ollama_format({"type": "text"}) is None
    assert translate.openai_format("json") == {"type": "json_object"}
    assert translate.openai_format(schema) == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    options = {"num_predict": -1, "temperature": 0.2, "num_ctx": 8192, "stop": ["x"]}
    assert translate.openai_sampling(options, {"num_ctx": 8192}, model="m") == {"temperature": 0.2, "stop": ["x"]}
    with pytest.raises(BadInput) as refused:
        translate.openai_sampling({"top_k": 5}, {"top_k": 5}, model="m")
    assert refused.value.param == "options.top_k"


def test_tool_calls_both_ways_and_streamed_fragments_joined() -> None:
    ids: list[str] = []
    sent = translate.openai_tool_calls(
        [{"function": {"name": "f", "arguments": {"b": [1]}}}, {"id": "own", "function": {"name": "g"}}], ids=ids
    )
    assert [c["function"]["arguments"] for c in sent] == ['{"b":[1]}', "{}"] and ids[1] == "own" and ids[0].startswith("call_")
    parts = wire.ToolCallParts()
    parts.add([{"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": ""}}])
    parts.add(
        [
            {"index": 1, "id": "c1", "function": {"name": "g", "arguments": '{"z"'}},
            {"index": 0, "function": {"arguments": '{"a":'}},
        ]
    )
    parts.add([{"index": 0, "function": {"arguments": "2}"}}, {"index": 1, "function": {"arguments": ":0}"}}])
    assert translate.ollama_tool_calls(parts.calls()) == [
        {"id": "c0", "function": {"index": 0, "name": "f", "arguments": {"a": 2}}},
        {"id": "c1", "function": {"index": 1, "name": "g", "arguments": {"z": 0}}},
    ]
    with pytest.raises(ValueError, match="not JSON"):
        translate.ollama_tool_calls([{"function": {"name": "f", "arguments": "{"}}])


def test_a_role_only_first_chunk_is_not_counted_as_a_token() -> None:
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    text = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    end = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    stream = role + text * 3 + end
    counted = openai_upstream.tokens(
        stream[-2048:], whole=False, events=stream.count(b"data:"), prompt_tokens=2, head=stream[:1024]
    )
    assert counted == (2, 3, True)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"seed": "1"}, "seed"),
        ({"stop": ["a"] * 17}, "stop"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0]"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
    ],
)
def test_the_openai_door_names_the_field_it_refuses(body: dict[str, Any], param: str) -> None:
    with pytest.raises(wire.Refused) as refused:
        wire.check("chat", {"model": "m", "messages": [{"role": "user", "content": "x"}]} | body)
    assert refused.value.param == param


def test_sdk_echoes_in_the_conversation_pass() -> None:
    echoed = {"role": "assistant", "content": None, "refusal": None, "annotations": [], "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}", "parsed_arguments": {}}}]}  # fmt: skip
    wire.check("chat", {"model": "m", "messages": [echoed]})


_STRING_BOUNDS = {"type": "string", "minLength": 12, "maxLength": 20}
_NULLABLE = {"anyOf": [{"type": "number", "maximum": 0.5}, {"type": "null"}]}
SCHEMAS = [
    {"type": "object", "properties": {"a": _STRING_BOUNDS, "b": {"type": ["null", "integer"], "minimum": 5}}},
    {"type": "array", "items": {"$ref": "#/$defs/P"}, "minItems": 3, "$defs": {"P": _NULLABLE}},
    {
        "type": "object",
        "properties": {"when": {"type": "string", "format": "date-time"}, "k": {"const": 3}, "e": {"enum": ["x"]}},
    },
    {"properties": {"nested": {"properties": {"deep": {"type": "boolean"}}}, "list": {"items": {"type": "string"}}}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_simulators_answers_validate_against_the_schema_asked_for(schema: dict[str, Any]) -> None:
    jsonschema.validate(example_of(schema), schema)


def test_the_simulator_calls_the_first_tool_and_those_the_prompt_names() -> None:
    params = {"type": "object", "properties": {"x": {"type": "integer"}}}
    tools = [{"type": "function", "function": {"name": n, "parameters": params}} for n in ("first", "second", "third")]
    assert [c["function"]["name"] for c in tool_calls(tools, "use third")] == ["first", "third"]
    assert tool_calls(tools, "")[0]["function"] == {"index": 0, "name": "first", "arguments": {"x": 1}}
