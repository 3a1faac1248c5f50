"""The Ollama-compatible front door (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``,
``/api/ps``, ``/api/version``): any Ollama client can point at the router unchanged. Bodies pass
through with the chosen model's tag and the merged options; answers stream back chunk by chunk."""

from __future__ import annotations

from typing import Any

import orjson

from router import openai_upstream
from router.core import RouterCore, decision_headers, facts, merged_options, sse_error
from router.errors import BadInput, render
from router.forward import Opened, UpstreamFailed
from router.http import Incoming, Reply, json_reply
from router.policy import Candidate, Decision, NoRoute
from schemas.model import Capability
from schemas.route import Task

VERSION = "0.12.6"  # the Ollama API version the router speaks


def read_json(request: Incoming) -> dict[str, Any]:
    try:
        body = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def _text_and_caps(path: str, body: dict[str, Any]) -> tuple[str, frozenset[Capability], Task | None]:
    if path == "/api/embed":
        raw = body.get("input", "")
        return (raw if isinstance(raw, str) else "\n".join(map(str, raw))), frozenset(), Task.EMBEDDING
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


async def forward(core: RouterCore, request: Incoming, path: str) -> Reply:
    """Route one Ollama-API request and stream the chosen upstream's answer back."""
    try:
        body = read_json(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadInput("model is required")
        text, caps, task = _text_and_caps(path, body)
        info = facts(model=model, text=text, headers=request.headers, options=body.get("options"), capabilities=caps, task=task)
        decision, micros = core.decide(info)
        stream = bool(body.get("stream", True)) and path != "/api/embed"
        opened = await core.open(
            decision,
            path=lambda c: path if c.node else openai_upstream.PATHS[path],
            body=_body(decision, body, path),
            stream=stream,
            decision_us=micros,
        )
        headers = decision_headers(decision, opened, micros)
        if opened.candidate.node is None:  # an OpenAI-compatible upstream: its answer in Ollama's shapes
            return await _from_openai(core, decision, opened, micros, path=path, model=model, stream=stream, headers=headers)
        if not stream:
            return Reply(opened.status, await core.body(decision, opened, micros), "application/json", headers)
        return Reply(
            opened.status, media_type="application/x-ndjson", headers=headers, stream=core.stream(decision, opened, micros)
        )
    except (BadInput, NoRoute, UpstreamFailed) as exc:
        return render(exc, "ollama")


async def _from_openai(
    core: RouterCore,
    decision: Decision,
    opened: Opened,
    micros: float,
    *,
    path: str,
    model: str,
    stream: bool,
    headers: dict[str, str],
) -> Reply:
    started = opened.started
    if stream:
        upstream = core.stream(decision, opened, micros, broken=sse_error)
        lines = openai_upstream.stream(path, upstream, model=model, started=started)
        return Reply(media_type="application/x-ndjson", headers=headers, stream=lines)
    data = orjson.loads(await core.body(decision, opened, micros))
    out = openai_upstream.answer(path, data, model=model, started=started)
    return json_reply(out, 502 if "error" in out else 200, headers=headers)


def _body(decision: Decision, body: dict[str, Any], path: str) -> Any:
    def build(cand: Candidate) -> dict[str, Any]:
        if cand.node is None:
            options = merged_options(decision.table, decision, cand.model, body.get("options"))
            return openai_upstream.request(path, body, model=cand.model.tag, options=options)
        out = dict(body)
        out["model"] = cand.model.tag
        out["options"] = merged_options(decision.table, decision, cand.model, body.get("options"))
        out.setdefault("keep_alive", cand.model.keep_alive)
        return out

    return build


def tags(core: RouterCore) -> Reply:
    """The models the fleet serves (names clients may ask for), like Ollama's ``/api/tags``."""
    table = core.table
    models = [
        {"name": m.name, "model": m.name, "modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "",
         "details": {"format": "gguf", "family": "", "parameter_size": "", "quantization_level": ""}}
        for m in sorted(table.models.values(), key=lambda m: m.name)
        if table.nodes.get(m.name) or m.endpoint
    ]  # fmt: skip
    return json_reply({"models": models})


def ps(core: RouterCore) -> Reply:
    """Models loaded on at least one healthy node."""
    table = core.table
    loaded = sorted(m.name for m in table.models.values() if any(m.tag in n.loaded for n in table.nodes.get(m.name, ())))
    return json_reply({"models": [{"name": n, "model": n, "size": 0, "size_vram": 0, "digest": ""} for n in loaded]})


def version() -> Reply:
    return json_reply({"version": VERSION})
