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
from typing import Any, Literal

import orjson

from router import translate
from router.auth import Caller
from router.call import Answer, Call, embed_text, facts, listed
from router.errors import BadInput, Dialect
from router.http import Reply, json_reply
from router.overrides import governed_fields, without
from router.policy import Candidate, Decision, merged_options
from router.table import RouteTable
from schemas import ollama
from schemas import openai as wire
from schemas.model import Capability
from schemas.route import Task

#: OpenAI sampling fields and the Ollama option each becomes (``max_completion_tokens``: see ``_options``).
OPTION_OF = {field: option for option, field in translate.OPENAI_FIELD.items()}
KINDS = {
    "/v1/chat/completions": ("/api/chat", "chat.completion"),
    "/v1/completions": ("/api/generate", "text_completion"),
    "/v1/embeddings": ("/api/embed", "list"),
}
_WIRE: dict[str, Literal["chat", "completion", "embedding"]] = {
    "/api/chat": "chat", "/api/generate": "completion", "/api/embed": "embedding"
}  # fmt: skip


def _options(body: dict[str, Any]) -> dict[str, Any]:
    out = {OPTION_OF[k]: v for k, v in body.items() if k in OPTION_OF and v is not None}
    if body.get("max_completion_tokens") is not None:  # the newer name wins where a client sends both
        out["num_predict"] = body["max_completion_tokens"]
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    return out


def _prompt(body: dict[str, Any]) -> str:
    prompt = body["prompt"]
    return prompt if isinstance(prompt, str) else prompt[0]


def _node_refuses(body: dict[str, Any], model: str) -> None:
    """What an Ollama node cannot honour though an OpenAI-compatible upstream could."""
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, dict):
        raise BadInput(
            f"tool_choice {orjson.dumps(choice).decode()} cannot be honoured by the Ollama nodes serving {model!r}: "
            'Ollama cannot force a tool call (send "auto" or "none", or response_format json_schema for a fixed shape)',
            "tool_choice",
        )


def _ollama_body(
    path: str, body: dict[str, Any], messages: list[dict[str, Any]], decision: Decision, cand: Candidate
) -> dict[str, Any]:  # fmt: skip
    options = merged_options(decision, cand.model)
    out: dict[str, Any] = {"model": cand.model.tag, "options": options, "keep_alive": cand.model.keep_alive}
    if path == "/api/embed":
        out["input"] = body["input"]
        if body.get("dimensions") is not None:
            out["dimensions"] = body["dimensions"]
        return out
    _node_refuses(body, cand.model.name)
    client = decision.request.client
    let = client.let(cand.model.name, cand.model.client) if client is not None else None
    out["stream"] = bool(body.get("stream"))
    if path == "/api/chat":
        out["messages"] = messages if let is None else without(messages, let)
        if body.get("tools") and body.get("tool_choice") != "none":
            out["tools"] = body["tools"]
    else:
        out["prompt"] = _prompt(body)
        if body.get("suffix"):
            out["suffix"] = body["suffix"]
    fmt = translate.ollama_format(body.get("response_format"))
    if fmt is not None:
        out["format"] = fmt
    return out


class OpenAIDoor:
    """One of ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""

    dialect: Dialect = "openai"

    def __init__(self, front: str) -> None:
        self.front = front
        self.path, self.kind = KINDS[front]

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Call:
        path = self.path
        try:
            wire.check(_WIRE[path], body)
        except wire.Refused as exc:
            raise BadInput(str(exc), exc.param) from None
        model: str = body["model"]
        caps: set[Capability] = set()
        messages: list[dict[str, Any]] = []
        if path == "/api/chat":
            messages, images = translate.ollama_messages(body["messages"])
            text = "\n".join(m["content"] for m in messages)
            caps |= {Capability.VISION} if images else set()
            caps |= {Capability.TOOLS} if body.get("tools") and body.get("tool_choice") != "none" else set()
        elif path == "/api/embed":
            text = embed_text(body)
        else:
            text = _prompt(body)
        task = Task.EMBEDDING if path == "/api/embed" else None
        info = facts(
            model=model, text=text, headers=headers, options=_options(body), capabilities=frozenset(caps), task=task,
            fields=governed_fields({}, messages),
        )  # fmt: skip
        stream = bool(body.get("stream")) and path != "/api/embed"
        front = self.front.removeprefix("/v1")  # endpoints name their /v1 base

        def upstream(decision: Decision, cand: Candidate) -> tuple[str, dict[str, Any]]:
            if cand.node is None:  # an OpenAI-compatible upstream takes the request as it came
                return front, dict(body, model=cand.model.tag)
            return path, _ollama_body(path, body, messages, decision, cand)

        fmt = body.get("response_format")
        wants_json = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
        return Call(info, stream, upstream, render=lambda answer: self.render(answer, body, model), wants_json=wants_json)

    def render(self, answer: Answer, body: dict[str, Any], model: str) -> Reply:
        headers = answer.headers or {}
        if not answer.from_node:  # an OpenAI-compatible upstream answered in our dialect already
            if answer.chunks is not None:
                return Reply(answer.status, media_type="text/event-stream", headers=headers, stream=answer.chunks)
            return Reply(answer.status, answer.body, "application/json", headers)
        single = body.get("parallel_tool_calls") is False  # at most one tool call, as OpenAI answers then
        if answer.chunks is not None:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _sse(answer.chunks, kind=self.kind, model=model, include_usage=include_usage, single=single)
            return Reply(media_type="text/event-stream", headers=headers, stream=events)
        data = orjson.loads(answer.body)
        if "error" in data:
            return json_reply({"error": {"message": data["error"], "type": "upstream_error", "code": 502}}, 502, headers=headers)
        if self.path == "/api/embed":
            return json_reply(_embeddings(data, model, body.get("encoding_format")), headers=headers)
        return json_reply(_completion(data, kind=self.kind, model=model, single=single), headers=headers)


def _usage(line: dict[str, Any]) -> dict[str, int]:
    prompt, completion = ollama.usage(line)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(answer: dict[str, Any], *, kind: str, model: str, single: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model}
    finish = ollama.finish_reason(answer)
    if kind == "chat.completion":
        calls = translate.openai_tool_calls(ollama.tool_calls(answer)[: 1 if single else None], ids=[])
        text = ollama.text(answer)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        out["choices"] = [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]
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


async def _sse(
    chunks: AsyncIterator[bytes], *, kind: str, model: str, include_usage: bool, single: bool
) -> AsyncIterator[bytes]:  # fmt: skip
    """Ollama's stream lines as OpenAI chunks: text deltas, each tool call whole in one delta (an
    id that stays with it, its index among the answer's calls), ``finish_reason: tool_calls`` when
    any was sent, and the usage in a last chunk of no choices when the client asked for it."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model,
            "object": "chat.completion.chunk" if kind == "chat.completion" else "text_completion"}  # fmt: skip
    first, ids = True, list[str]()
    async for line in _lines(chunks):
        if "error" in line:
            yield b"data: " + orjson.dumps({"error": {"message": line["error"], "type": "upstream_error"}}) + b"\n\n"
            break
        done = bool(line.get("done"))
        finish = ("tool_calls" if ids else ollama.finish_reason(line)) if done else None
        if kind == "chat.completion":
            delta: dict[str, Any] = {"content": ollama.text(line)}
            if first:
                delta["role"] = "assistant"
            if (calls := ollama.tool_calls(line)) and not (single and ids):
                start = len(ids)
                sent = translate.openai_tool_calls(calls[: 1 if single else None], ids=ids)
                delta["tool_calls"] = [{"index": start + k} | call for k, call in enumerate(sent)]
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": ollama.text(line), "finish_reason": finish, "logprobs": None}
        first = False
        yield b"data: " + orjson.dumps(head | {"choices": [choice]}) + b"\n\n"
        if done and include_usage:
            yield b"data: " + orjson.dumps(head | {"choices": [], "usage": _usage(line)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def models(table: RouteTable, caller: Caller | None = None) -> Reply:
    """The models clients may ask for (with a key, those it may use): the same as ``/api/tags``."""
    data = [{"id": m.name, "object": "model", "created": 0, "owned_by": "llmtune"} for m in listed(table, caller)]
    return json_reply({"object": "list", "data": data})
