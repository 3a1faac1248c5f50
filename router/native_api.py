"""The native front door, ``POST /api/v1/route``: routing hints in, the answer and the decision out
(``dry_run``: the decision alone, nothing sent upstream)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from router.bandit import Choice
from router.call import Answer, Call, facts
from router.errors import Dialect
from router.http import Reply, json_reply
from router.ollama_api import render as ollama_render
from router.ollama_api import upstream, whole
from router.policy import Decision
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
        **({"quality": quality(decision.choice)} if decision.choice else {}),
    }


def quality(choice: Choice) -> dict[str, Any]:
    """The quality strategy's part of a decision: the class, why the first model won, the draws."""
    return {"class": choice.cls, "why": choice.why, "scores": choice.scores}


class NativeDoor:
    """``POST /api/v1/route``: a ``RouteRequest`` in (a ValidationError is a 422), the answer (in
    Ollama's shape, or its NDJSON stream) and the decision out."""

    dialect: Dialect = "native"

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Call:
        req = RouteRequest.model_validate(body)
        hints = {**headers, **({"x-tenant": req.tenant} if req.tenant else {})}
        if req.tags:
            hints["x-route-tags"] = ",".join(req.tags)
        if req.sticky_key:
            hints["x-sticky-key"] = req.sticky_key
        if req.route:
            hints["x-route-name"] = req.route
        info = facts(
            model=req.model, text=req.text(), headers=hints, options=req.options, capabilities=frozenset(req.capabilities),
            task=req.task, fields=frozenset({"system"}) if any(m.role == "system" for m in req.messages or ()) else frozenset(),
        )  # fmt: skip
        info = dataclasses.replace(info, max_cost=req.max_cost, max_latency_ms=req.max_latency_ms)
        path = "/api/chat" if req.messages is not None else "/api/generate"
        sent: dict[str, Any] = {"stream": req.stream, "options": req.options}
        if req.messages is not None:
            sent["messages"] = [m.model_dump() for m in req.messages]
        else:
            sent["prompt"] = req.prompt
        return Call(
            info,
            req.stream,
            upstream(path, sent),
            render=lambda answer: render(answer, path=path, dry_run=req.dry_run),
            dry_run=req.dry_run,
        )


def render(answer: Answer, *, path: str, dry_run: bool) -> Reply:
    if dry_run:  # nothing was sent: the decision alone
        return json_reply({"decision": explain(answer.decision, answer.decision_us)})
    headers = answer.headers or {}
    if answer.chunks is not None:
        served = answer.candidate.model.name
        ollama_like = ollama_render(answer, path=path, model=served)
        return Reply(media_type="application/x-ndjson", headers=headers, stream=ollama_like.stream)
    out = whole(answer, path=path, model=answer.candidate.model.name)
    return json_reply({"answer": out, "decision": explain(answer.decision, answer.decision_us)}, headers=headers)
