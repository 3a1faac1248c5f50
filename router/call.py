"""What passes between a front door and the request lifecycle (router/core.py): the ``Call`` a door
parses a request into, the ``Answer`` the lifecycle hands back for the door to render, the
``Door`` interface, and the request facts every door builds the same way (``facts``)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from pydantic import ConfigDict, ValidationError

from router.auth import Caller
from router.classify import Classifier, classify, estimate_tokens
from router.errors import BadInput, Dialect
from router.http import Reply
from router.overrides import ClientView
from router.policy import Candidate, Decision, Request
from router.table import ModelEntry, RouteTable
from schemas.model import Capability, OllamaOptions
from schemas.route import Task

_NO_TAGS: frozenset[str] = frozenset()
DEFAULT_OUTPUT_TOKENS = 128  # assumed answer length when the request sets no num_predict / max_tokens
#: Bodies larger than this are parsed in a worker thread (orjson holds the GIL, but the event loop
#: then gets its turn every switch interval instead of waiting out a whole 16 MiB parse).
PARSE_OFF_LOOP_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Answer:
    """What the lifecycle got for a call: the decision, the candidate that answered (the first
    one, for a dry run), the response status and decision headers, and the answer in the upstream's
    own dialect (Ollama's for a node, OpenAI's for a static endpoint): ``body`` whole, or ``chunks``
    as they arrive (accounted for as the door's rendering consumes them)."""

    decision: Decision
    candidate: Candidate
    decision_us: float
    status: int = 200
    headers: Mapping[str, str] | None = None
    started: float = 0.0  # perf_counter when the answering candidate was tried
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None

    @property
    def from_node(self) -> bool:
        """An Ollama node answered (else a static OpenAI-compatible endpoint)."""
        return self.candidate.node is not None


@dataclass(frozen=True, slots=True)
class Call:
    """One request as its front door read it: the policy's facts, how a candidate is asked
    (``upstream(decision, candidate)`` → path and body), and how the answer goes back (``render``)."""

    request: Request
    stream: bool
    upstream: Callable[[Decision, Candidate], tuple[str, Mapping[str, Any]]]
    render: Callable[[Answer], Reply]
    wants_json: bool = False  # the client asked for JSON (Ollama's format, OpenAI's response_format)
    # A node's whole answer is the client's answer byte for byte: the lifecycle sends it from the
    # upstream's parser callback as it arrives, before the request's task wakes up (~0.15 ms less).
    early: bool = False
    dry_run: bool = False  # decide, render the decision, send nothing upstream


class Door(Protocol):
    """A front door: a pure translator between its API and the lifecycle."""

    dialect: Dialect

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Call:
        """The call a request body asks for; BadInput (or a ValidationError) when it is not one."""
        ...


async def read_json(raw: bytes | bytearray) -> dict[str, Any]:
    """A request body as a JSON object; BadInput when it is not one."""
    raw = raw or b"{}"
    start = bytes(raw[:64]).lstrip()[:1]
    if start and start != b"{":  # not an object: said at once, without parsing (and copying) megabytes
        raise BadInput("the body must be a JSON object")
    try:
        body = await asyncio.to_thread(orjson.loads, raw) if len(raw) > PARSE_OFF_LOOP_BYTES else orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def listed(table: RouteTable, caller: Caller | None) -> list[ModelEntry]:
    """The models a caller may ask for by name, sorted: served by a node or an endpoint and, with a
    key, allowed to it. Every listing (``/api/tags``, ``/v1/models``) shows exactly these."""
    return [
        m for m in sorted(table.models.values(), key=lambda m: m.name)
        if (table.nodes.get(m.name) or m.endpoint) and (caller is None or caller.may_use_model(m.name))
    ]  # fmt: skip


def embed_text(body: Mapping[str, Any]) -> str:
    """What the context must hold of an embedding request's ``input`` (a string or a list of
    strings, both APIs): its longest input, since each input is embedded on its own."""
    raw = body.get("input", "")
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return max(raw, key=len, default="")
    raise BadInput("'input' must be a string or a list of strings")


def facts(
    *,
    model: str | None,
    text: str,
    headers: Mapping[str, str],
    options: Mapping[str, Any] | None,
    capabilities: frozenset[Capability] = frozenset(),
    task: Task | None = None,
    classifier: Classifier = classify,
    fields: frozenset[str] = frozenset(),
) -> Request:
    """The policy's view of a request: hints from ``x-route-*`` headers, the rest inferred;
    ``fields``: the operator-governed fields it sets (router/overrides.py)."""
    hinted = headers.get("x-route-task")
    if options is not None and not isinstance(options, Mapping):
        raise BadInput("'options' must be an object")
    if options:
        _check_options(options)
    try:
        predict = int((options or {}).get("num_predict") or 0)
        num_ctx = int(options["num_ctx"]) if options and options.get("num_ctx") is not None else None
        max_cost = float(headers["x-route-max-cost"]) if headers.get("x-route-max-cost") else None
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadInput(f"num_predict and num_ctx must be integers and x-route-max-cost a number ({exc})") from exc
    return Request(
        model=model,
        task=task or (Task(hinted) if hinted is not None and hinted in Task._value2member_map_ else None),
        text=text,
        classifier=classifier,
        tags=frozenset(t.strip() for t in tags.split(",") if t.strip()) if (tags := headers.get("x-route-tags")) else _NO_TAGS,
        tenant=headers.get("x-tenant"),
        headers=headers,
        route=headers.get("x-route-name"),
        capabilities=capabilities,
        prompt_tokens=estimate_tokens(text),
        max_output_tokens=0 if task is Task.EMBEDDING else predict if predict > 0 else DEFAULT_OUTPUT_TOKENS,
        num_ctx=num_ctx if num_ctx is None or num_ctx > 0 else None,
        max_cost=max_cost,
        sticky=headers.get("x-sticky-key"),
        draw=random.random(),
        client=ClientView(options, fields) if options or fields else None,
    )


class _ClientOptions(OllamaOptions):
    """A request's ``options``: the documented ones by type and range (JSON types as Ollama takes
    them, no coercion); others pass through, as Ollama ignores names it does not know."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _check_options(options: Mapping[str, Any]) -> None:
    """BadInput (400) naming each option a request got wrong."""
    try:
        _ClientOptions.model_validate(options, strict=True)
    except ValidationError as exc:
        wrong = "; ".join(f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise BadInput(f"invalid options: {wrong}") from None
