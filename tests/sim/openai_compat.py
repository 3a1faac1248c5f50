"""An OpenAI-compatible server over the simulator (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``), translated onto its native handlers as Ollama serves them,
and answering as OpenAI does where servers differ: tool calls streamed in fragments (the id and
name first, then the arguments in pieces), ``content: null`` beside tool calls, a role-only first
chunk. Tests use a simulated node as a static OpenAI-compatible upstream (like vLLM) through it."""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response, StreamingResponse

Native = Callable[[dict[str, Any]], Awaitable[Response]]
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop", "max_tokens": "num_predict",
            "max_completion_tokens": "num_predict", "presence_penalty": "presence_penalty",
            "frequency_penalty": "frequency_penalty"}  # fmt: skip


class BadRequest(Exception):
    """Answered as OpenAI's 400 ``invalid_request_error`` naming ``param``."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _options(body: dict[str, Any]) -> dict[str, Any]:
    return {ollama: body[name] for name, ollama in _OPTIONS.items() if body.get(name) is not None}


def _usage(line: dict[str, Any]) -> dict[str, int]:
    p, c = int(line.get("prompt_eval_count") or 0), int(line.get("eval_count") or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _finish(line: dict[str, Any], called: bool) -> str:
    return "tool_calls" if called else "length" if line.get("done_reason") == "length" else "stop"


def _format(body: dict[str, Any]) -> Any:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        return "json"
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    return None


def _messages(raw: list[Any]) -> list[dict[str, Any]]:
    """OpenAI messages as Ollama's: parts joined, data-URL images, tool calls with object arguments,
    tool results named by the call they answer."""
    out, names = [], {}
    for i, msg in enumerate(raw):
        content, entry = msg.get("content"), {"role": msg.get("role")}
        if isinstance(content, list):
            entry["images"] = [p["image_url"]["url"].split(",", 1)[1] for p in content if p.get("type") == "image_url"]
            content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
        entry["content"] = content or ""
        if msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                names[call["id"]] = call["function"]["name"]
                calls.append(
                    {"function": {"name": call["function"]["name"], "arguments": orjson.loads(call["function"]["arguments"])}}
                )
            entry["tool_calls"] = calls
        if msg.get("role") == "tool":
            if msg.get("tool_call_id") not in names:
                raise BadRequest("messages with role 'tool' must be a response to a preceding message with 'tool_calls'",
                                 f"messages.[{i}].tool_call_id")  # fmt: skip
            entry["tool_name"] = names[msg["tool_call_id"]]
        out.append(entry)
    return out


def _openai_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
         "function": {"name": c["function"]["name"], "arguments": orjson.dumps(c["function"]["arguments"]).decode()}}
        for c in calls
    ]  # fmt: skip


async def _ndjson(response: StreamingResponse) -> AsyncIterator[dict[str, Any]]:
    buffer = b""
    async for chunk in response.body_iterator:
        buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield orjson.loads(line)


class OpenAICompat:
    """``stream_usage``: whether a stream honours ``stream_options: {include_usage: true}`` with a
    last chunk of ``choices: []`` and the usage, as OpenAI and Ollama do; off, the stream carries
    no usage at all, as some OpenAI-compatible servers (older llama.cpp builds) answer."""

    def __init__(
        self,
        *,
        chat: Native,
        generate: Native,
        embed: Native,
        models: Callable[[], list[str]],
        stream_usage: Callable[[], bool] = lambda: True,
        seen: collections.deque[dict[str, Any]] | None = None,
    ) -> None:
        """``seen``: where request bodies are kept as they arrived (tests read what the router sent)."""
        self._chat, self._generate, self._embed, self._models = chat, generate, embed, models
        self.stream_usage = stream_usage
        self.seen: collections.deque[dict[str, Any]] = seen if seen is not None else collections.deque(maxlen=20)

    async def completions(self, body: dict[str, Any], *, chat: bool) -> Response:
        self.seen.append(body)
        native: dict[str, Any] = {"model": body.get("model"), "stream": bool(body.get("stream")), "options": _options(body)}
        try:
            if chat:
                native["messages"] = _messages(body.get("messages") or [])
                if body.get("tools"):
                    native["tools"] = body["tools"]
            else:
                native["prompt"] = body.get("prompt") or ""
                if body.get("suffix"):
                    native["suffix"] = body["suffix"]
        except BadRequest as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.param,
                                           "code": None}}, status_code=400)  # fmt: skip
        if (fmt := _format(body)) is not None:
            native["format"] = fmt
        answer = await (self._chat if chat else self._generate)(native)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        kind, model = ("chat.completion" if chat else "text_completion"), body.get("model")
        if not isinstance(answer, StreamingResponse):
            line = orjson.loads(bytes(answer.body))
            if "error" in line:
                return JSONResponse({"error": {"message": line["error"], "type": "api_error"}}, status_code=answer.status_code)
            calls = _openai_calls(line.get("message", {}).get("tool_calls") or [])
            choice: dict[str, Any] = {"index": 0, "finish_reason": _finish(line, bool(calls)), "logprobs": None}
            if chat:
                text = line["message"].get("content") or ""
                choice["message"] = {"role": "assistant", "content": text or (None if calls else "")}
                if calls:
                    choice["message"]["tool_calls"] = calls
            else:
                choice["text"] = line.get("response", "")
            return JSONResponse({"id": ident, "object": kind, "created": created, "model": model, "choices": [choice],
                                 "usage": _usage(line)})  # fmt: skip

        include_usage = self.stream_usage() and bool((body.get("stream_options") or {}).get("include_usage"))
        head = {"id": ident, "object": f"{kind}.chunk" if chat else kind, "created": created, "model": model}

        def event(choice: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps(head | {"choices": [{"index": 0, "logprobs": None} | choice]}) + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            called = 0
            if chat:
                yield event({"delta": {"role": "assistant", "content": ""}, "finish_reason": None})
            async for line in _ndjson(answer):
                if "error" in line:
                    yield b"data: " + orjson.dumps({"error": {"message": line["error"], "type": "api_error"}}) + b"\n\n"
                    return
                text = line.get("message", {}).get("content", "") if chat else line.get("response", "")
                if text:
                    yield event(
                        {"delta": {"content": text}, "finish_reason": None} if chat else {"text": text, "finish_reason": None}
                    )
                for call in _openai_calls(line.get("message", {}).get("tool_calls") or []):  # fragments, as OpenAI streams them
                    args, fn = call["function"]["arguments"], call["function"]
                    first = {
                        "index": called,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": fn["name"], "arguments": ""},
                    }
                    yield event({"delta": {"tool_calls": [first]}, "finish_reason": None})
                    for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
                        yield event(
                            {
                                "delta": {"tool_calls": [{"index": called, "function": {"arguments": piece}}]},
                                "finish_reason": None,
                            }
                        )
                    called += 1
                if line.get("done"):
                    finish = _finish(line, bool(called))
                    yield event({"delta": {}, "finish_reason": finish} if chat else {"text": "", "finish_reason": finish})
                    if include_usage:
                        yield b"data: " + orjson.dumps(head | {"choices": [], "usage": _usage(line)}) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(self, body: dict[str, Any]) -> Response:
        native = {"model": body.get("model"), "input": body.get("input", "")}
        if body.get("dimensions"):
            native["dimensions"] = body["dimensions"]
        answer = await self._embed(native)
        data = orjson.loads(bytes(answer.body))
        if "error" in data:
            return JSONResponse({"error": {"message": data["error"]}}, status_code=answer.status_code)
        items = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data["embeddings"])]
        return JSONResponse({"object": "list", "data": items, "model": body.get("model"), "usage": _usage(data)})

    async def models(self, _body: dict[str, Any]) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "library"} for m in self._models()],
            }
        )
