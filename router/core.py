"""What every front door shares: request facts → decision → merged options → an upstream that
answered → the streamed body, with the decision in headers, metrics and an outcome record."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from pydantic import ConfigDict, ValidationError

from router import openai_upstream
from router.classify import Classifier, classify, estimate_tokens
from router.errors import BadInput
from router.forward import Forwarder, Opened, UpstreamFailed
from router.http import Incoming
from router.live import LiveStats
from router.metrics import RouterMetrics
from router.overrides import HEADER as OVERRIDDEN
from router.overrides import ClientView
from router.policy import Candidate, Decision, NoRoute, Request, decide
from router.quality import signals
from router.table import ModelEntry, RouteTable
from router.upstream import MAX_WHOLE_BYTES, Response, UpstreamError
from schemas import ollama
from schemas.model import Capability, OllamaOptions
from schemas.route import CircuitBreaker, Retries, Task, Timeouts

log = logging.getLogger(__name__)
_DEFAULT_LIMITS = (Timeouts(), Retries(), None)  # a request that matched no route (asked for a model by name)
_NO_TAGS: frozenset[str] = frozenset()
DEFAULT_OUTPUT_TOKENS = 128  # assumed answer length when the request sets no num_predict / max_tokens


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished request, for the performance monitor."""

    request_id: str
    route: str | None
    model: str
    node: str
    variant: str | None
    status: str  # ok | error
    decision_us: float
    first_byte_ms: float
    total_ms: float
    attempts: int
    at: float = 0.0  # unix time it finished
    tokens: int | None = None  # Ollama's eval_count, when the answer reported it
    tokens_per_s: float | None = None
    signals: tuple[str, ...] = ()  # router/quality.py
    question: str | None = None  # for the monitor's judge: the request's text and the answer, on a sampled share
    answer: str | None = None


class OutcomeSink(Protocol):
    def record(self, outcome: Outcome) -> None: ...


class LogSink:
    """Until the monitor consumes outcomes, they are logged at debug level."""

    def record(self, outcome: Outcome) -> None:
        log.debug("outcome %s", outcome)


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


def merged_options(table: RouteTable, decision: Decision, model: ModelEntry) -> dict[str, Any]:
    """Model defaults (tuned) ← route target or experiment variant ← the request's options as the
    model's client policy lets them through; ``num_ctx`` clamped to the model's context window."""
    out = dict(model.options)
    route = table.route(decision.route)
    if route is not None:
        out.update(route.target_options.get(model.name, {}))
        variant = route.variant_options.get(decision.variant) if decision.variant else None
        if variant is not None and variant[0] == model.name:
            out.update(variant[1])
    client = decision.request.client
    if client is not None:
        out.update(client.let(model.name, model.client).options)
    if "num_ctx" in out:
        out["num_ctx"] = min(int(out["num_ctx"]), model.context_window)
    return out


def sse_error(message: str) -> bytes:
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "upstream_error"}}) + b"\n\n"


class RouterCore:
    def __init__(
        self,
        table: Callable[[], RouteTable],
        *,
        metrics: RouterMetrics,
        sink: OutcomeSink | None = None,
        judge_sample: float = 0.0,
        max_answer_bytes: int = MAX_WHOLE_BYTES,
    ) -> None:
        self._table = table
        self.judge_sample = judge_sample  # share of whole answers whose texts go with their outcome record
        self.live = LiveStats()
        self.forwarder = Forwarder(self.live, max_answer_bytes=max_answer_bytes)
        self.metrics = metrics
        self.sink = sink or LogSink()
        # Request ids: unique per process by a counter, across processes by a random prefix (a
        # uuid4 per request cost a system call on the request path).
        self._id_prefix, self._ids = os.urandom(6).hex(), itertools.count(1)

    @property
    def table(self) -> RouteTable:
        return self._table()

    def decide(self, request: Request) -> tuple[Decision, float]:
        """The decision and the microseconds it took (NoRoute propagates)."""
        started = time.perf_counter_ns()
        try:
            decision = decide(self.table, request, self.live)
        except NoRoute as exc:
            self.metrics.rejected.labels("unknown_model" if exc.unknown_model else "no_route").inc()
            raise
        if request.client is not None:  # a model that refuses what clients may not set, rather than dropping it
            first = decision.first.model
            why = request.client.refused(first.name, first.client)
            if why is not None:
                self.metrics.rejected.labels("client_policy").inc()
                raise BadInput(why)
        return decision, (time.perf_counter_ns() - started) / 1000  # observed in the metrics once the request ends

    def observe_decision(self, micros: float) -> None:
        self.metrics.decision.observe(micros / 1e6)

    def limits(self, decision: Decision) -> tuple[Timeouts, Retries, CircuitBreaker | None]:
        route = decision.table.route(decision.route)
        return (route.spec.timeouts, route.spec.retries, route.spec.circuit_breaker) if route else _DEFAULT_LIMITS

    async def open(
        self,
        decision: Decision,
        *,
        path: Callable[[Candidate], str],
        body: Callable[[Candidate], Mapping[str, Any]],
        stream: bool,
        decision_us: float,
        request_id: str,
        incoming: Incoming | None = None,
        early: Callable[[Candidate, int], Callable[[Response], None] | None] | None = None,
        wants_json: bool = False,
    ) -> Opened:
        """The first candidate that answered (``early``: see ``Forwarder.open``)."""
        timeouts, retries, breaker = self.limits(decision)
        try:
            opened = await self.forwarder.open(
                decision, path=path, body=body, timeouts=timeouts, retries=retries, stream=stream, early=early, breaker=breaker
            )
        except (Exception, asyncio.CancelledError) as exc:  # no upstream answered, or the client left first
            self.observe_decision(decision_us)
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            self.metrics.requests.labels(decision.route or "-", "-", "-", decision.variant or "-", status).inc()
            raise
        if opened.failed:
            self.metrics.retries.labels(decision.route or "-").inc(len(opened.failed))
        opened.request_id, opened.incoming, opened.wants_json = request_id, incoming, wants_json
        return opened

    def request_id(self, given: str | None) -> str:
        """The client's ``x-request-id`` when it sent a usable one, else a new id."""
        if given is not None and 0 < len(given) <= 128 and given.isprintable():
            return given
        return f"{self._id_prefix}-{next(self._ids):x}"

    async def stream(
        self, decision: Decision, opened: Opened, decision_us: float, *, broken: Callable[[str], bytes] = ollama.error_line
    ) -> AsyncIterator[bytes]:
        """The upstream's body, first bytes included; accounting when it ends or breaks. A client
        that goes away mid-answer says nothing about the node: it releases the slot, no more. An
        upstream that breaks off mid-answer ends the stream with ``broken(reason)`` (an error line,
        as Ollama itself reports errors mid-stream)."""
        ok, gone, tail = False, False, opened.first[-2048:]
        counting = opened.candidate.node is None  # a static endpoint's SSE: its events count its tokens
        events = opened.first.count(b"data:") if counting else 0
        try:
            yield opened.first
            async for chunk in opened.rest(self.limits(decision)[0].idle_ms / 1000):
                tail = (tail + chunk)[-2048:]
                if counting:
                    events += chunk.count(b"data:")
                yield chunk
            ok = True
        except UpstreamError as exc:
            yield broken(f"node {opened.candidate.node_name} broke off the answer: {exc}")
        except (asyncio.CancelledError, GeneratorExit):
            gone = True
            raise
        finally:
            self._defer_end(decision, opened, decision_us, tail, ok=ok, gone=gone, events=events)

    async def body(self, decision: Decision, opened: Opened, decision_us: float) -> bytes:
        """The whole answer (non-streaming requests), sent as one response with a length; an
        upstream that breaks off mid-answer raises UpstreamFailed."""
        ok, gone, data = False, False, opened.first
        try:
            data += await opened.response.read()
            ok = True
        except UpstreamError as exc:
            raise UpstreamFailed(f"{opened.candidate.node_name}/{opened.candidate.model.name}: {exc}", timeout=False) from exc
        except asyncio.CancelledError:
            gone = True
            raise
        finally:
            self._defer_end(decision, opened, decision_us, data, ok=ok, gone=gone, whole=True)
        return data

    def _defer_end(
        self, decision: Decision, opened: Opened, decision_us: float, tail: bytes, *, ok: bool, gone: bool,
        whole: bool = False, events: int = 0,
    ) -> None:  # fmt: skip
        """The connection goes back to the pool now; the accounting (live figures, metrics, the
        outcome record, ~0.1 ms) runs on the loop's next turn, after the answer's last bytes are
        written, so the client does not wait for it."""
        opened.close()
        try:
            asyncio.get_running_loop().call_soon(self._end, decision, opened, decision_us, tail, ok, gone, whole, events)
        except RuntimeError:  # a stream finalized outside the loop (at exit): account for it now
            self._end(decision, opened, decision_us, tail, ok, gone, whole, events)

    def _end(
        self, decision: Decision, opened: Opened, decision_us: float, tail: bytes, ok: bool, gone: bool, whole: bool,
        events: int,
    ) -> None:  # fmt: skip
        incoming = opened.incoming
        if ok and incoming is not None and incoming.answered and opened.response.completed:
            before, after = opened.first_sent - incoming.received, incoming.answered - opened.response.completed
            self.metrics.overhead.observe(before + after)
        total_ms = self.forwarder.finish(opened, ok=ok, client_gone=gone)
        final = ollama.final_object(tail) if ok and opened.candidate.node is not None else None  # parsed once
        tokens, rate = ollama.speed(final)
        if ok and opened.candidate.node is None and decision.request.task is not Task.EMBEDDING:  # embeddings generate none
            tokens, rate = _endpoint_speed(decision, opened, tail, whole=whole, events=events, total_ms=total_ms)
        found = signals(final, whole=whole, wants_json=opened.wants_json)
        if rate is not None:
            cand = opened.candidate
            self.metrics.tokens_per_s.labels(decision.route or "-", cand.model.name, cand.node_name).observe(rate)
        texts = None
        if whole and final is not None and self.judge_sample and random.random() < self.judge_sample:
            texts = (decision.request.text[-4000:], ollama.text(final)[:4000])
        self._record(decision, opened, decision_us, total_ms, ok=ok, client_gone=gone, tokens=tokens, rate=rate, found=found,
                     texts=texts)  # fmt: skip

    def _record(self, decision: Decision, opened: Opened, decision_us: float, total_ms: float, *, ok: bool,
                client_gone: bool = False, tokens: int | None = None, rate: float | None = None,
                found: tuple[str, ...] = (), texts: tuple[str, str] | None = None) -> None:  # fmt: skip
        self.observe_decision(decision_us)
        cand = opened.candidate
        node = cand.node_name
        status = "ok" if ok else "cancelled" if client_gone else "error"
        labels = (decision.route or "-", cand.model.name, node)
        self.metrics.requests.labels(*labels, decision.variant or "-", status).inc()
        if cand.model.name != decision.first.model.name:
            self.metrics.fallbacks.labels(decision.route or "-").inc()
        self.metrics.upstream.labels(*labels).observe(total_ms / 1000)
        self.metrics.first_byte.labels(*labels).observe(opened.first_byte_s)
        self.sink.record(
            Outcome(
                opened.request_id,
                decision.route,
                cand.model.name,
                node,
                decision.variant,
                status,
                decision_us,
                min(opened.first_byte_s * 1000, total_ms),  # a whole answer's "first byte" is taken once it is all in
                total_ms,
                len(opened.failed) + 1,
                time.time(),
                tokens,
                rate,
                found,
                *(texts or (None, None)),
            )
        )


def _endpoint_speed(
    decision: Decision, opened: Opened, tail: bytes, *, whole: bool, events: int, total_ms: float
) -> tuple[int | None, float | None]:
    """Generated tokens and tokens per second of a static endpoint's answer: its usage (or its
    chunks) over the time it took to generate (a stream's after its first byte)."""
    counts = openai_upstream.tokens(tail, whole=whole, events=events, prompt_tokens=decision.request.prompt_tokens)
    if counts is None or counts[1] <= 0:
        return None, None
    seconds = total_ms / 1000 - (0.0 if whole else opened.first_byte_s)
    return counts[1], (counts[1] / seconds if seconds > 0 else None)


def decision_headers(decision: Decision, opened: Opened, decision_us: float) -> dict[str, str]:
    return route_headers(decision, opened.candidate, len(opened.failed) + 1, opened.request_id, decision_us)


def route_headers(decision: Decision, cand: Candidate, attempts: int, request_id: str, decision_us: float) -> dict[str, str]:
    """The decision as response headers: which model, node, variant and route, how long the
    decision took, how many candidates were tried, and the request's id."""
    headers = {
        "x-route-model": cand.model.name,
        "x-route-node": cand.node_name,
        "x-route-variant": decision.variant or "",
        "x-route-name": decision.route or "",
        "x-route-decision-us": f"{decision_us:.1f}",
        "x-route-attempts": str(attempts),
        "x-request-id": request_id,
    }
    client = decision.request.client
    if client is not None and (report := client.let(cand.model.name, cand.model.client).report):
        headers[OVERRIDDEN] = report  # what of the request the model's client policy dropped or clamped
    return headers
