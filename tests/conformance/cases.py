"""What the conformance suite asks: a tool an agent can run, a structured-output schema, and
helpers that read a whole OpenAI answer back out of its stream, as the SDKs do."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                                  "parameters": WEATHER_PARAMS}}]  # fmt: skip
ASK = "What is the weather in Paris?"
RESULT = "sunny and 21 degrees"


def run_tool(name: str, args: dict[str, Any]) -> str:
    """The client's side of a tool call: the weather tool, run."""
    assert name == "get_weather" and args.get("unit") in ("celsius", "fahrenheit"), (name, args)
    return RESULT


class Forecast(BaseModel):
    """A structured answer (the SDKs turn it into a strict JSON schema)."""

    city: str
    temperature: float
    conditions: list[str]
    windy: bool


FORECAST_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "temperature": {"type": "number"},
        "conditions": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "nested": {"$ref": "#/$defs/Wind"},
    },
    "required": ["city", "temperature", "conditions", "nested"],
    "additionalProperties": False,
    "$defs": {"Wind": {"type": "object", "properties": {"speed": {"type": "integer", "minimum": 0}}, "required": ["speed"]}},
}


def sse(text: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body, up to ``[DONE]`` (which must end it)."""
    events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    assert events and events[-1] == "[DONE]", events[-3:]
    return [orjson.loads(e) for e in events[:-1]]


def assembled(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """A chat stream's content, tool calls (fragments joined by index), finish reason and usage."""
    content, calls, finish, usage = "", {}, None, None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            content += delta.get("content") or ""
            for part in delta.get("tool_calls") or []:
                call = calls.setdefault(part["index"], {"id": None, "name": "", "arguments": ""})
                call["id"] = part.get("id") or call["id"]
                call["name"] += (part.get("function") or {}).get("name") or ""
                call["arguments"] += (part.get("function") or {}).get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return {"content": content, "tool_calls": [calls[i] for i in sorted(calls)], "finish_reason": finish, "usage": usage}
