"""The OpenAI-compatible front door (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``), mapped onto Ollama's native API so per-model options such as
``num_ctx`` still apply; streams come back as OpenAI server-sent events, chunk by chunk. A static
OpenAI-compatible upstream (a Model with ``provider: openai``) gets the request as it came."""

from __future__ import annotations

import array
import base64
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from router.auth import Caller
from router.call import Answer, Call, embed_text, facts
from router.errors import BadInput, Dialect
from router.http import Reply, json_reply
from router.overrides import governed_fields, without
from router.policy import Candidate, Decision, merged_options
from router.table import RouteTable
from schemas import ollama
from schemas.model import Capability
from schemas.route import Task

#: OpenAI sampling fields and the Ollama option each becomes.
OPTION_OF = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop",
             "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
             "max_tokens": "num_predict", "max_completion_tokens": "num_predict"}  # fmt: skip
KINDS = {
    "/v1/chat/completions": ("/api/chat", "chat.completion"),
    "/v1/completions": ("/api/generate", "text_completion"),
    "/v1/embeddings": ("/api/embed", "list"),
}


def _options(body: dict[str, Any]) -> dict[str, Any]:
    out = {OPTION_OF[k]: v for k, v in body.items() if k in OPTION_OF and v is not None}
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    return out


def _messages(body: dict[str, Any]) -> tuple[list[dict[str, Any]], frozenset[Capability]]:
    """OpenAI messages as Ollama's: text parts joined, data-URL images moved to ``images``."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadInput("'messages' must be a non-empty list")
    out, caps = [], set()
    for msg in raw:
        if not isinstance(msg, dict):
            raise BadInput("each message must be an object with 'role' and 'content'")
        content, images = msg.get("content") or "", []
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            urls = [
                p.get("image_url", {}).get("url", "") for p in content if isinstance(p, dict) and p.get("type") == "image_url"
            ]
            images = [u.split(",", 1)[1] for u in urls if u.startswith("data:") and "," in u]
            content = "\n".join(texts)
        entry = {k: v for k, v in msg.items() if k in ("role", "tool_calls", "tool_call_id", "name")} | {"content": content}
        if images:
            entry["images"] = images
            caps.add(Capability.VISION)
        out.append(entry)
    if body.get("tools"):
        caps.add(Capability.TOOLS)
    return out, frozenset(caps)


def _ollama_body(path: str, body: dict[str, Any], decision: Decision, cand: Candidate) -> dict[str, Any]:
    options = merged_options(decision, cand.model)
    out: dict[str, Any] = {"model": cand.model.tag, "options": options, "keep_alive": cand.model.keep_alive}
    client = decision.request.client
    let = client.let(cand.model.name, cand.model.client) if client is not None else None
    if path == "/api/embed":
        out["input"] = body.get("input", "")
        return out
    out["stream"] = bool(body.get("stream"))
    if path == "/api/chat":
        out["messages"] = _messages(body)[0] if let is None else without(_messages(body)[0], let)
        if body.get("tools"):
            out["tools"] = body["tools"]
    else:
        out["prompt"] = body.get("prompt") if isinstance(body.get("prompt"), str) else "\n".join(body.get("prompt") or [])
    fmt = (body.get("response_format") or {}).get("type")
    if fmt == "json_object":
        out["format"] = "json"
    return out


class OpenAIDoor:
    """One of ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""

    dialect: Dialect = "openai"

    def __init__(self, front: str) -> None:
        self.front = front
        self.path, self.kind = KINDS[front]

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Call:
        path = self.path
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadInput("'model' is required")
        if body.get("n") not in (None, 1):
            raise BadInput("only n=1 is supported")
        caps: frozenset[Capability] = frozenset()
        if path == "/api/chat":
            messages, caps = _messages(body)
            text = "\n".join(str(m["content"]) for m in messages)
        elif path == "/api/embed":
            text = embed_text(body)
        else:
            text = str(body.get("prompt") or "")
        task = Task.EMBEDDING if path == "/api/embed" else None
        fields = governed_fields({}, body.get("messages"))
        info = facts(
            model=model, text=text, headers=headers, options=_options(body), capabilities=caps, task=task, fields=fields
        )  # fmt: skip
        stream = bool(body.get("stream")) and path != "/api/embed"
        front = self.front.removeprefix("/v1")  # endpoints name their /v1 base

        def upstream(decision: Decision, cand: Candidate) -> tuple[str, dict[str, Any]]:
            if cand.node is None:  # an OpenAI-compatible upstream takes the request as it came
                return front, dict(body, model=cand.model.tag)
            return path, _ollama_body(path, body, decision, cand)

        return Call(info, stream, upstream, render=lambda answer: self.render(answer, body, model), wants_json=_wants_json(body))

    def render(self, answer: Answer, body: dict[str, Any], model: str) -> Reply:
        headers = answer.headers or {}
        if not answer.from_node:  # an OpenAI-compatible upstream answered in our dialect already
            if answer.chunks is not None:
                return Reply(answer.status, media_type="text/event-stream", headers=headers, stream=answer.chunks)
            return Reply(answer.status, answer.body, "application/json", headers)
        if answer.chunks is not None:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _sse(answer.chunks, kind=self.kind, model=model, include_usage=include_usage)
            return Reply(media_type="text/event-stream", headers=headers, stream=events)
        data = orjson.loads(answer.body)
        if "error" in data:
            return json_reply({"error": {"message": data["error"], "type": "upstream_error", "code": 502}}, 502, headers=headers)
        if self.path == "/api/embed":
            return json_reply(_embeddings(data, model, body.get("encoding_format")), headers=headers)
        return json_reply(_completion(data, kind=self.kind, model=model), headers=headers)


def _usage(line: dict[str, Any]) -> dict[str, int]:
    prompt, completion = ollama.usage(line)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(answer: dict[str, Any], *, kind: str, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model}
    finish = ollama.finish_reason(answer)
    if kind == "chat.completion":
        message: dict[str, Any] = {"role": "assistant", "content": ollama.text(answer)}
        if calls := ollama.tool_calls(answer):
            message["tool_calls"] = calls
        out["choices"] = [{"index": 0, "message": message, "finish_reason": finish}]
    else:
        out["choices"] = [{"index": 0, "text": ollama.text(answer), "finish_reason": finish, "logprobs": None}]
    out["usage"] = _usage(answer)
    return out


def _embeddings(answer: dict[str, Any], model: str, encoding: str | None) -> dict[str, Any]:
    data = []
    for i, vector in enumerate(ollama.embeddings(answer) or []):
        value: Any = vector
        if encoding == "base64":  # what the official client asks for by default: little-endian float32
            value = base64.b64encode(array.array("f", vector).tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = ollama.usage(answer)[0]
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Ollama's stream lines from chunks that may split them anywhere."""
    lines = ollama.Lines()
    async for chunk in chunks:
        for line in lines.feed(chunk):
            yield line
    for line in lines.end():
        yield line


async def _sse(chunks: AsyncIterator[bytes], *, kind: str, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"
    first = True
    async for line in _lines(chunks):
        if "error" in line:
            yield b"data: " + orjson.dumps({"error": {"message": line["error"], "type": "upstream_error"}}) + b"\n\n"
            break
        done = bool(line.get("done"))
        if kind == "chat.completion":
            delta: dict[str, Any] = {"content": ollama.text(line)}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": ollama.finish_reason(line) if done else None}
        else:
            choice = {"index": 0, "text": ollama.text(line), "finish_reason": ollama.finish_reason(line) if done else None}
        first = False
        event: dict[str, Any] = {"id": ident, "object": chunk_kind, "created": created, "model": model, "choices": [choice]}
        yield b"data: " + orjson.dumps(event) + b"\n\n"
        if done and include_usage:
            usage = {"id": ident, "object": chunk_kind, "created": created, "model": model, "choices": [], "usage": _usage(line)}
            yield b"data: " + orjson.dumps(usage) + b"\n\n"
    yield b"data: [DONE]\n\n"


def models(table: RouteTable, caller: Caller | None = None) -> Reply:
    """The models clients may ask for (with a key, those it may use)."""
    data = [
        {"id": m.name, "object": "model", "created": 0, "owned_by": "llmtune"}
        for m in sorted(table.models.values(), key=lambda m: m.name)
        if (table.nodes.get(m.name) or m.endpoint) and (caller is None or caller.may_use_model(m.name))
    ]
    return json_reply({"object": "list", "data": data})


def _wants_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
