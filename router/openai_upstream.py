"""Requests of the Ollama front door sent to a static OpenAI-compatible upstream (a Model with
``provider: openai`` and an ``endpoint`` such as ``http://vllm:8000/v1``), and the answers turned
back into Ollama's shapes: one JSON object, or NDJSON lines from the upstream's SSE stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

_FIELDS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop", "num_predict": "max_tokens",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}  # fmt: skip
PATHS = {"/api/chat": "/chat/completions", "/api/generate": "/completions", "/api/embed": "/embeddings"}


def request(path: str, body: Mapping[str, Any], *, model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI request for an Ollama-API ``body`` (``model``: the upstream's model id)."""
    if path == "/api/embed":
        return {"model": model, "input": body.get("input", "")}
    out: dict[str, Any] = {"model": model, "stream": bool(body.get("stream", True))}
    out |= {_FIELDS[k]: v for k, v in options.items() if k in _FIELDS and not (k == "num_predict" and v is not None and v < 0)}
    if out["stream"]:
        out["stream_options"] = {"include_usage": True}
    if body.get("format") == "json":
        out["response_format"] = {"type": "json_object"}
    if path == "/api/generate":
        out["prompt"] = str(body.get("prompt") or "")
        return out
    messages = []
    for m in body.get("messages") or []:
        content: Any = m.get("content", "")
        if m.get("images"):
            content = [{"type": "text", "text": content}] + [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}} for img in m["images"]
            ]
        messages.append({"role": m.get("role", "user"), "content": content})
    out["messages"] = messages
    if body.get("tools"):
        out["tools"] = body["tools"]
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _done(model: str, finish: str | None, usage: Mapping[str, Any] | None, started: float) -> dict[str, Any]:
    usage = usage or {}
    return {"model": model, "created_at": _now(), "done": True, "done_reason": "length" if finish == "length" else "stop",
            "total_duration": int((time.perf_counter() - started) * 1e9), "prompt_eval_count": usage.get("prompt_tokens", 0),
            "eval_count": usage.get("completion_tokens", 0)}  # fmt: skip


def answer(path: str, data: Mapping[str, Any], *, model: str, started: float) -> dict[str, Any]:
    """One OpenAI answer as Ollama's non-streaming answer."""
    if "error" in data:
        err = data["error"]
        return {"error": err.get("message", str(err)) if isinstance(err, dict) else str(err)}
    if path == "/api/embed":
        return {"model": model, "embeddings": [d["embedding"] for d in data.get("data", [])]}
    choice = (data.get("choices") or [{}])[0]
    out = _done(model, choice.get("finish_reason"), data.get("usage"), started)
    if path == "/api/chat":
        message = choice.get("message") or {}
        out["message"] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            out["message"]["tool_calls"] = message["tool_calls"]
    else:
        out["response"] = choice.get("text", "")
    return out


async def stream(path: str, chunks: AsyncIterator[bytes], *, model: str, started: float) -> AsyncIterator[bytes]:
    """The upstream's SSE events as Ollama's NDJSON lines, the last one ``done`` with token counts."""
    buffer, finish, usage = b"", None, None
    async for chunk in chunks:
        buffer += chunk
        *events, buffer = buffer.split(b"\n")
        for raw in events:
            line = raw.strip()
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            event = orjson.loads(line[5:])
            if "error" in event:  # the upstream's (or the router's, when the upstream broke off) error event
                err = event["error"]
                yield orjson.dumps({"error": err.get("message", str(err)) if isinstance(err, dict) else str(err)}) + b"\n"
                return
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                text = (choice.get("delta") or {}).get("content") if path == "/api/chat" else choice.get("text")
                if text:
                    piece: dict[str, Any] = {"model": model, "created_at": _now(), "done": False}
                    piece |= {"message": {"role": "assistant", "content": text}} if path == "/api/chat" else {"response": text}
                    yield orjson.dumps(piece) + b"\n"
    last = _done(model, finish, usage, started)
    last |= {"message": {"role": "assistant", "content": ""}} if path == "/api/chat" else {"response": ""}
    yield orjson.dumps(last) + b"\n"
