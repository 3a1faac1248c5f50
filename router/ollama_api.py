"""The Ollama-compatible front door (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``,
``/api/ps``, ``/api/version``): any Ollama client can point at the router unchanged. A pure
translator (router/call.py): bodies pass through with the chosen model's tag and the merged
options; answers stream back chunk by chunk."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from router import openai_upstream
from router.auth import Caller
from router.call import Answer, Call, embed_text, facts, listed
from router.errors import BadInput, Dialect
from router.http import Reply, json_reply
from router.overrides import governed_fields, without
from router.policy import Candidate, Decision, merged_options
from router.table import RouteTable
from schemas.model import Capability
from schemas.route import Task

VERSION = "0.12.6"  # the Ollama API version the router speaks


def _text_and_caps(path: str, body: dict[str, Any]) -> tuple[str, frozenset[Capability], Task | None]:
    if path == "/api/embed":
        return embed_text(body), frozenset(), Task.EMBEDDING
    caps: set[Capability] = set()
    if body.get("tools"):
        caps.add(Capability.TOOLS)
    if path == "/api/chat":
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise BadInput("'messages' must be a list")
        if any(isinstance(m, dict) and m.get("images") for m in messages):
            caps.add(Capability.VISION)
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict)), frozenset(caps), None
    if body.get("images"):
        caps.add(Capability.VISION)
    return f"{body.get('system') or ''}\n{body.get('prompt') or ''}", frozenset(caps), None


class OllamaDoor:
    """One of ``/api/chat``, ``/api/generate``, ``/api/embed``."""

    dialect: Dialect = "ollama"

    def __init__(self, path: str) -> None:
        self.path = path

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Call:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadInput("model is required")
        path = self.path
        text, caps, task = _text_and_caps(path, body)
        info = facts(
            model=model, text=text, headers=headers, options=body.get("options"), capabilities=caps, task=task,
            fields=governed_fields(body, body.get("messages")),
        )  # fmt: skip
        stream = bool(body.get("stream", True)) and path != "/api/embed"
        return Call(
            info,
            stream,
            upstream(path, body),
            render=functools.partial(render, path=path, model=model),
            wants_json=body.get("format") is not None,
            early=True,  # a node's whole answer is already in this door's dialect
        )


def upstream(path: str, body: dict[str, Any]) -> Callable[[Decision, Candidate], tuple[str, dict[str, Any]]]:
    """How an Ollama-API request goes to a candidate: the same path and body on a node, with the
    chosen tag and merged options; the OpenAI equivalent for a static OpenAI-compatible endpoint."""

    def build(decision: Decision, cand: Candidate) -> tuple[str, dict[str, Any]]:
        options = merged_options(decision, cand.model)
        client = decision.request.client
        let = client.let(cand.model.name, cand.model.client) if client is not None else None
        sent = body
        if let is not None and let.drop:  # fields the model keeps for its operator
            sent = {k: v for k, v in body.items() if k not in let.drop}
            if isinstance(sent.get("messages"), list):
                sent["messages"] = without(sent["messages"], let)
        if cand.node is None:
            sent_on = openai_upstream.request(path, sent, model=cand.model.tag, options=options, name=cand.model.name)
            return openai_upstream.PATHS[path], sent_on
        out = dict(sent)
        out["model"] = cand.model.tag
        out["options"] = options
        out.setdefault("keep_alive", cand.model.keep_alive)
        return path, out

    return build


def render(answer: Answer, *, path: str, model: str) -> Reply:
    """An answer in Ollama's shape, whichever kind of upstream gave it."""
    headers = answer.headers or {}
    if answer.chunks is not None:
        chunks = answer.chunks
        if not answer.from_node:
            prompt = answer.decision.request.prompt_tokens
            chunks = openai_upstream.stream(path, chunks, model=model, started=answer.started, prompt_tokens=prompt)
        return Reply(answer.status, media_type="application/x-ndjson", headers=headers, stream=chunks)
    if answer.from_node:  # Ollama's answer as it came: no need to parse it
        return Reply(answer.status, answer.body, "application/json", headers)
    out = whole(answer, path=path, model=model)
    return json_reply(out, 502 if "error" in out else 200, headers=headers)


def whole(answer: Answer, *, path: str, model: str) -> dict[str, Any]:
    """A whole answer as Ollama's object, whichever kind of upstream gave it."""
    data = orjson.loads(answer.body)
    if answer.from_node:
        return data  # type: ignore[no-any-return]
    prompt = answer.decision.request.prompt_tokens
    return openai_upstream.answer(path, data, model=model, started=answer.started, prompt_tokens=prompt)


def tags(table: RouteTable, caller: Caller | None = None) -> Reply:
    """The models the fleet serves (names clients may ask for; with a key, those it may use), like
    Ollama's ``/api/tags``."""
    models = [
        {"name": m.name, "model": m.name, "modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "",
         "details": {"format": "gguf", "family": "", "parameter_size": "", "quantization_level": ""}}
        for m in listed(table, caller)
    ]  # fmt: skip
    return json_reply({"models": models})


def ps(table: RouteTable, caller: Caller | None = None) -> Reply:
    """Models loaded on at least one healthy node (with a key, those it may use)."""
    loaded = sorted(
        m.name for m in table.models.values()
        if any(m.tag in n.loaded for n in table.nodes.get(m.name, ())) and (caller is None or caller.may_use_model(m.name))
    )  # fmt: skip
    return json_reply({"models": [{"name": n, "model": n, "size": 0, "size_vram": 0, "digest": ""} for n in loaded]})


def version() -> Reply:
    return json_reply({"version": VERSION})
