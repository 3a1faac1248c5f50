"""The native front door, ``POST /api/v1/route``: routing hints in, the answer and the decision out
(``dry_run``: the decision alone, nothing sent upstream)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import ValidationError

from router.core import RouterCore, decision_headers, facts
from router.errors import BadInput, render
from router.forward import UpstreamFailed
from router.http import Incoming, Reply, json_reply
from router.ollama_api import answer_stream, read_json, upstream_body, upstream_path, whole_answer
from router.policy import Decision, NoRoute
from schemas.routing import RouteRequest


def explain(decision: Decision, micros: float, *, limit: int = 5) -> dict[str, Any]:
    chain = []
    for cand in decision.candidates():
        chain.append({"model": cand.model.name, "node": cand.node_name})
        if len(chain) >= limit:
            break
    first = decision.first
    return {
        "route": decision.route,
        "strategy": decision.strategy,
        "variant": decision.variant,
        "model": first.model.name,
        "ollama_tag": first.model.tag,
        "node": first.node_name,
        "fallbacks": chain[1:],
        "reasons": list(decision.reasons),
        "decision_us": round(micros, 1),
        "table_revision": decision.table.revision,
    }


async def route(core: RouterCore, request: Incoming) -> Reply:
    try:
        req = RouteRequest.model_validate(await read_json(request))
        headers = {**request.headers, **({"x-tenant": req.tenant} if req.tenant else {})}
        if req.tags:
            headers["x-route-tags"] = ",".join(req.tags)
        if req.sticky_key:
            headers["x-sticky-key"] = req.sticky_key
        if req.route:
            headers["x-route-name"] = req.route
        info = facts(
            model=req.model, text=req.text(), headers=headers, options=req.options, capabilities=frozenset(req.capabilities),
            task=req.task, fields=frozenset({"system"}) if any(m.role == "system" for m in req.messages or ()) else frozenset(),
        )  # fmt: skip
        info = dataclasses.replace(info, max_cost=req.max_cost, max_latency_ms=req.max_latency_ms)
        decision, micros = core.decide(info)
        if req.dry_run:
            core.observe_decision(micros)
            return json_reply({"decision": explain(decision, micros)})
        path = "/api/chat" if req.messages is not None else "/api/generate"
        body: dict[str, Any] = {"stream": req.stream, "options": req.options}
        if req.messages is not None:
            body["messages"] = [m.model_dump() for m in req.messages]
        else:
            body["prompt"] = req.prompt
        opened = await core.open(
            decision,
            path=upstream_path(path),
            body=upstream_body(decision, body, path),
            stream=req.stream,
            decision_us=micros,
            request_id=core.request_id(request.headers.get("x-request-id")),
            incoming=request,
        )
        out_headers = decision_headers(decision, opened, micros)
        served = opened.candidate.model.name
        if req.stream:
            chunks = answer_stream(core, decision, opened, micros, path=path, model=served)
            return Reply(media_type="application/x-ndjson", headers=out_headers, stream=chunks)
        answer = await whole_answer(core, decision, opened, micros, path=path, model=served)
    except (BadInput, ValidationError, NoRoute, UpstreamFailed) as exc:
        return render(exc, "native")
    return json_reply({"answer": answer, "decision": explain(decision, micros)}, headers=out_headers)
