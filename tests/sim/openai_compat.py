"""Ollama's OpenAI-compatible endpoints (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``) on the simulator, as Ollama serves them: translated onto its
native handlers. Lets tests use a simulated node as an OpenAI-compatible upstream (like vLLM)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response, StreamingResponse

Native = Callable[[dict[str, Any]], Awaitable[Response]]
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop", "max_tokens": "num_predict"}


def _options(body: dict[str, Any]) -> dict[str, Any]:
    return {ollama: body[name] for name, ollama in _OPTIONS.items() if body.get(name) is not None}


def _usage(line: dict[str, Any]) -> dict[str, int]:
    p, c = int(line.get("prompt_eval_count") or 0), int(line.get("eval_count") or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _finish(line: dict[str, Any]) -> str:
    return "length" if line.get("done_reason") == "length" else "stop"


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
    ) -> None:
        self._chat, self._generate, self._embed, self._models = chat, generate, embed, models
        self.stream_usage = stream_usage

    async def completions(self, body: dict[str, Any], *, chat: bool) -> Response:
        native = {"model": body.get("model"), "stream": bool(body.get("stream")), "options": _options(body)}
        if chat:
            native["messages"] = body.get("messages") or []
        else:
            native["prompt"] = body.get("prompt") or ""
        answer = await (self._chat if chat else self._generate)(native)
        ident, created, kind = (
            f"chatcmpl-{uuid.uuid4().hex[:12]}",
            int(time.time()),
            "chat.completion" if chat else "text_completion",
        )
        if not isinstance(answer, StreamingResponse):
            line = orjson.loads(bytes(answer.body))
            if "error" in line:
                return JSONResponse({"error": {"message": line["error"], "type": "api_error"}}, status_code=answer.status_code)
            choice: dict[str, Any] = {"index": 0, "finish_reason": _finish(line)}
            choice |= {"message": line["message"]} if chat else {"text": line.get("response", "")}
            return JSONResponse({"id": ident, "object": kind, "created": created, "model": body.get("model"), "choices": [choice],
                                 "usage": _usage(line)})  # fmt: skip

        include_usage = self.stream_usage() and bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            async for line in _ndjson(answer):
                done = bool(line.get("done"))
                if chat:
                    piece: dict[str, Any] = {
                        "delta": {"role": "assistant", "content": line.get("message", {}).get("content", "")}
                    }
                else:
                    piece = {"text": line.get("response", "")}
                event = {"id": ident, "object": f"{kind}.chunk" if chat else kind, "created": created, "model": body.get("model"),
                         "choices": [{"index": 0, "finish_reason": _finish(line) if done else None, **piece}]}  # fmt: skip
                yield b"data: " + orjson.dumps(event) + b"\n\n"
                if done and include_usage:
                    event = {k: v for k, v in event.items() if k != "choices"} | {"choices": [], "usage": _usage(line)}
                    yield b"data: " + orjson.dumps(event) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(self, body: dict[str, Any]) -> Response:
        answer = await self._embed({"model": body.get("model"), "input": body.get("input", "")})
        data = orjson.loads(bytes(answer.body))
        if "error" in data:
            return JSONResponse({"error": {"message": data["error"]}}, status_code=answer.status_code)
        items = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data["embeddings"])]
        return JSONResponse({"object": "list", "data": items, "model": body.get("model"), "usage": _usage(data)})

    async def models(self, _body: dict[str, Any]) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "library"} for m in self._models()]}
        )
