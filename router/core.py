"""The request lifecycle, one for every front door: a door parses the request into a ``Call``
(router/call.py); ``serve`` runs it (decide → forward, through attempts and fallbacks → answer →
account) and gives the door an ``Answer`` to render. Accounting: the decision in headers, live
figures, metrics and an outcome record per request."""

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
from pydantic import ValidationError

from router import openai_upstream, tracing
from router.admission import AdmissionQueue, QueueRefused
from router.auth import Authenticator, Caller, NotAllowed, Unauthenticated
from router.call import Answer, Call, Door, read_json
from router.errors import BadInput, Dialect, UpstreamFailed, render_error
from router.forward import Forwarder, Opened, retryable
from router.http import Incoming, Reply
from router.limits import Admission, Limiter, LimitsUnavailable, RateLimited, door_headers
from router.live import LiveStats
from router.metrics import RouterMetrics
from router.overrides import HEADER as OVERRIDDEN
from router.policy import AllBusy, Candidate, Decision, NoRoute, Request, decide
from router.quality import signals
from router.table import RouteTable
from router.tracing import Spans, Trace
from router.upstream import MAX_WHOLE_BYTES, Response, UpstreamError
from schemas import ollama
from schemas.route import CircuitBreaker, QueueSpec, Retries, Task, Timeouts

log = logging.getLogger(__name__)
# what a request that matched no route (it asked for a model by name) runs with
_DEFAULT_LIMITS = (Timeouts(), Retries(), None)
_DEFAULT_QUEUE = QueueSpec()
#: Refusals before any upstream, by the reason label of llmtune_router_rejected_total.
_REFUSED: dict[type[Exception], str] = {Unauthenticated: "unauthenticated", NotAllowed: "not_allowed",
                                        RateLimited: "rate_limited", LimitsUnavailable: "limits_unavailable",
                                        QueueRefused: "queue"}  # fmt: skip
_SENT = Reply(status=200)  # returned for an answer already written: the server drops it


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
    api_key: str | None = None  # who: the key's name and the tenant it counted for
    tenant: str | None = None
    prompt_tokens: int = 0  # usage: the upstream's counts, else the router's estimate (``estimated``)
    completion_tokens: int = 0
    estimated: bool = False
    trace_id: str | None = None  # the W3C trace it belongs to
    cls: str | None = None  # the quality strategy's request class, the model it chose first, why, and the scores drawn
    chosen: str | None = None
    why: str | None = None
    scores: dict[str, float] | None = None


class OutcomeSink(Protocol):
    def record(self, outcome: Outcome) -> None: ...


class LogSink:
    """Until the monitor consumes outcomes, they are logged at debug level."""

    def record(self, outcome: Outcome) -> None:
        log.debug("outcome %s", outcome)


def sse_error(message: str) -> bytes:
    """An error event in a server-sent event stream, as OpenAI-compatible servers send one."""
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "upstream_error"}}) + b"\n\n"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One call in flight: what was decided, for whom, and the upstream that answered."""

    call: Call
    decision: Decision
    decision_us: float
    request_id: str
    incoming: Incoming
    opened: Opened
    caller: Caller | None  # the API key it came with (None: authentication off, or anonymous where optional)
    admission: Admission | None  # what it counted against its key's limits (settled when it ends)
    trace: Trace  # its W3C trace context (and spans, when exported)


class RouterCore:
    """Serves calls: the route table it decides on, the forwarder, live figures and accounting."""

    def __init__(
        self,
        table: Callable[[], RouteTable],
        *,
        metrics: RouterMetrics,
        sink: OutcomeSink | None = None,
        judge_sample: float = 0.0,
        max_answer_bytes: int = MAX_WHOLE_BYTES,
        auth: Authenticator | None = None,
        limiter: Limiter | None = None,
        queue: AdmissionQueue | None = None,
        spans: Spans | None = None,
    ) -> None:
        self._table = table
        self.queue = queue
        self.spans = spans
        self.auth = auth or Authenticator("off")
        self.limiter = limiter
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

    async def serve(self, door: Door, incoming: Incoming) -> Reply:
        """One request through a front door: authenticate → parse → admit → decide → forward →
        answer → account. Every error becomes the door's dialect of the one error map
        (router/errors.py)."""
        try:
            caller = self.auth.authenticate(incoming.headers)  # before any work for the request
            hints = incoming.headers
            if caller is not None:  # the tenant is the key's (or one it may act for), never a bare header's
                hints = {**hints, "x-tenant": caller.tenant_for(hints.get("x-tenant"))}
            call = door.parse(await read_json(incoming.body), hints)
            if caller is not None and not caller.may_use_model(call.request.model):
                raise NotAllowed(f"key {caller.prefix} ('{caller.name}') may not use model '{call.request.model}'")
            decided = time.perf_counter()
            decision, micros, queued = await self._decide_or_wait(call.request, caller)
            if caller is not None and not caller.may_use_route(decision.route):
                route = f"route '{decision.route}'" if decision.route else "a model outside every route"
                raise NotAllowed(f"key {caller.prefix} ('{caller.name}') may not use {route}")
            if call.dry_run:
                self.metrics.decision.observe(micros / 1e6)
                return call.render(Answer(decision, decision.first, micros))
            if (choice := decision.choice) is not None:
                first = decision.first.model.name
                self.metrics.quality_choices.labels(decision.route or "-", choice.cls, first, choice.why).inc()
            request_id = self.request_id(incoming.headers.get("x-request-id"))
            check: Admission | asyncio.Future[Admission | None] | None = None
            if caller is not None and self.limiter is not None and self.limiter.applies(caller):
                admit = self.limiter.admit(caller, request_id, call.request.prompt_tokens)
                # a key with room left is checked while the request goes upstream; near a limit, before
                check = asyncio.ensure_future(admit) if self.limiter.roomy(caller) else await admit
            trace = self._trace(incoming, decision, decided, micros, queued)
            exchange = await self._open(call, decision, micros, incoming, caller, request_id, check, door.dialect, trace)
            opened = exchange.opened
            headers = route_headers(decision, opened.candidate, len(opened.failed) + 1, exchange.request_id, micros)
            if exchange.admission is not None and exchange.admission.headers:
                headers.update(door_headers(exchange.admission.headers, door.dialect))
            cand, status = opened.candidate, opened.response.status
            if call.stream:
                chunks = self._stream(exchange, ollama.error_line if cand.node is not None else sse_error)
                return call.render(Answer(decision, cand, micros, status, headers, opened.started, chunks=chunks))
            data = await self._whole(exchange)
            if incoming.answered:  # already sent from the upstream's parser callback (Call.early)
                return _SENT
            return call.render(Answer(decision, cand, micros, status, headers, opened.started, body=data))
        except (Unauthenticated, NotAllowed, RateLimited, LimitsUnavailable, QueueRefused) as exc:
            self.metrics.rejected.labels(_REFUSED[type(exc)]).inc()
            return render_error(exc, door.dialect)
        except (BadInput, ValidationError, NoRoute, UpstreamFailed) as exc:
            return render_error(exc, door.dialect)

    async def _decide_or_wait(self, request: Request, caller: Caller | None) -> tuple[Decision, float, float]:
        """The decision, its microseconds and the seconds waited for a slot: while every node that
        could serve the request is at its limit, a wait in the admission queue (by the caller's
        priority class), then a new decision."""
        try:
            return (*self._decide(request), 0.0)
        except AllBusy as busy:
            if self.queue is None:
                raise
            first = busy
        waited = time.perf_counter()
        route = self.table.route(first.route)
        spec = route.spec.queue if route is not None else _DEFAULT_QUEUE
        deadline, seq = time.monotonic() + spec.max_wait_ms / 1000, None
        priority = caller.priority if caller is not None else "normal"
        while True:
            seq = await self.queue.wait(first.models, priority, deadline=deadline, max_depth=spec.max_depth, seq=seq)
            try:
                return (*self._decide(request), time.perf_counter() - waited)
            except AllBusy as again:  # another request took the slot: back to its place in the queue
                first = again

    def _trace(self, incoming: Incoming, decision: Decision, decided: float, micros: float, queued: float) -> Trace:
        """The request's trace context (and its spans so far, when they are exported)."""
        if self.spans is None:
            return tracing.incoming(incoming.headers)
        trace = self.spans.start(incoming.headers, incoming.received or decided)
        chosen = decided + micros / 1e6
        self.spans.step(trace, "llmtune.router.decide", decided, chosen, {"llmtune.route": decision.route})
        if queued:
            self.spans.step(trace, "llmtune.router.queue", chosen, chosen + queued)
        return trace

    def _decide(self, request: Request) -> tuple[Decision, float]:
        """The decision and the microseconds it took (NoRoute propagates)."""
        started = time.perf_counter_ns()
        try:
            decision = decide(self.table, request, self.live)
        except AllBusy:
            raise  # counted if the queue refuses it
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

    def limits(self, decision: Decision) -> tuple[Timeouts, Retries, CircuitBreaker | None]:
        route = decision.table.route(decision.route)
        return (route.spec.timeouts, route.spec.retries, route.spec.circuit_breaker) if route else _DEFAULT_LIMITS

    async def _open(
        self, call: Call, decision: Decision, micros: float, incoming: Incoming, caller: Caller | None, request_id: str,
        check: Admission | asyncio.Future[Admission | None] | None, dialect: Dialect, trace: Trace,
    ) -> Exchange:  # fmt: skip
        """The first candidate that answered, as an exchange to stream or read whole. ``check``:
        the caller's admission, or its limits check still running (roomy keys): then the answer
        waits for its verdict, and a refusal cuts the upstream off before the client sees a byte."""
        timeouts, retries, breaker = self.limits(decision)
        early = None
        if call.early and not call.stream and incoming.answer_now is not None:
            early = _early(decision, micros, request_id, incoming.answer_now, _verdict_headers(check, dialect))
        try:
            opened = await self.forwarder.open(
                decision,
                upstream=lambda cand: call.upstream(decision, cand),
                timeouts=timeouts,
                retries=retries,
                stream=call.stream,
                on_answer=early,
                breaker=breaker,
                headers=trace.upstream_headers(),
            )
        except (Exception, asyncio.CancelledError) as exc:  # no upstream answered, or the client left first
            self._settle_unanswered(check)
            if self.spans is not None:
                self.spans.end(trace, status="error", route=decision.route, error=str(exc)[:500] or type(exc).__name__)
            self.metrics.decision.observe(micros / 1e6)
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            self.metrics.requests.labels(decision.route or "-", "-", "-", decision.variant or "-", status).inc()
            self._record_unanswered(call, decision, micros, request_id, caller, trace, exc, status=status,
                                    received=incoming.received)  # fmt: skip
            raise
        admission = check
        if isinstance(check, asyncio.Future):
            try:
                admission = await asyncio.shield(check)
            except BaseException:  # refused (or the client left): the upstream is dropped, the node not blamed
                self._settle_unanswered(check)
                opened.close()
                self.forwarder.finish(opened, ok=False, client_gone=True)
                if self.spans is not None:
                    self.spans.end(trace, status="refused", route=decision.route)
                self.metrics.decision.observe(micros / 1e6)
                raise
        if opened.failed:
            self.metrics.retries.labels(decision.route or "-").inc(len(opened.failed))
        return Exchange(call, decision, micros, request_id, incoming, opened, caller, admission, trace)  # type: ignore[arg-type]

    def _record_unanswered(self, call: Call, decision: Decision, micros: float, request_id: str, caller: Caller | None,
                           trace: Trace, exc: BaseException, *, status: str, received: float) -> None:  # fmt: skip
        """A request no upstream answered is an outcome too (for the monitor's error rates and the
        quality posterior): recorded against the decision's first candidate."""
        first = decision.first
        ms = (time.perf_counter() - received) * 1000 if received else 0.0
        attempts = exc.attempts if isinstance(exc, UpstreamFailed) else 1
        self.sink.record(Outcome(
            request_id, decision.route, first.model.name, first.node_name, decision.variant, status, micros, ms, ms, attempts,
            time.time(), api_key=caller.name if caller is not None else None,
            tenant=caller.tenant if caller is not None else decision.request.tenant, prompt_tokens=call.request.prompt_tokens,
            estimated=True, trace_id=trace.trace_id, **_chosen(decision),
        ))  # fmt: skip

    def _settle_unanswered(self, check: Admission | asyncio.Future[Admission | None] | None) -> None:
        """No upstream answered: the admission frees its slot (its prompt stays counted: the work was asked for)."""
        limiter = self.limiter
        if limiter is None or check is None:
            return
        if not isinstance(check, asyncio.Future):
            limiter.settle(check, 0)
            return

        def settle(done: asyncio.Future[Admission | None]) -> None:
            if not done.cancelled() and done.exception() is None:
                limiter.settle(done.result(), 0)

        check.add_done_callback(settle)

    def request_id(self, given: str | None) -> str:
        """The client's ``x-request-id`` when it sent a usable one, else a new id."""
        if given is not None and 0 < len(given) <= 128 and given.isprintable():
            return given
        return f"{self._id_prefix}-{next(self._ids):x}"

    async def _stream(self, ex: Exchange, broken: Callable[[str], bytes]) -> AsyncIterator[bytes]:
        """The upstream's body, first bytes included; accounting when it ends or breaks. A client
        that goes away mid-answer says nothing about the node: it releases the slot, no more. An
        upstream that breaks off mid-answer ends the stream with ``broken(reason)`` (an error line
        in the upstream's dialect, as Ollama itself reports errors mid-stream)."""
        opened = ex.opened
        ok, gone, tail = False, False, opened.first[-2048:]
        counting = opened.candidate.node is None  # a static endpoint's SSE: its events count its tokens
        events = opened.first.count(b"data:") if counting else 0
        try:
            yield opened.first
            async for chunk in opened.rest(self.limits(ex.decision)[0].idle_ms / 1000):
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
            self._defer_end(ex, tail, ok=ok, gone=gone, events=events)

    async def _whole(self, ex: Exchange) -> bytes:
        """The whole answer (non-streaming requests), sent as one response with a length; an
        upstream that breaks off mid-answer raises UpstreamFailed."""
        opened = ex.opened
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
            self._defer_end(ex, data, ok=ok, gone=gone, whole=True)
        return data

    def _defer_end(self, ex: Exchange, tail: bytes, *, ok: bool, gone: bool, whole: bool = False, events: int = 0) -> None:
        """The connection goes back to the pool now; the accounting (live figures, metrics, the
        outcome record, ~0.1 ms) runs on the loop's next turn, after the answer's last bytes are
        written, so the client does not wait for it."""
        ex.opened.close()
        try:
            asyncio.get_running_loop().call_soon(self._end, ex, tail, ok, gone, whole, events)
        except RuntimeError:  # a stream finalized outside the loop (at exit): account for it now
            self._end(ex, tail, ok, gone, whole, events)

    def _end(self, ex: Exchange, tail: bytes, ok: bool, gone: bool, whole: bool, events: int) -> None:
        opened, decision, incoming = ex.opened, ex.decision, ex.incoming
        if ok and incoming.answered and opened.response.completed:
            before, after = opened.first_sent - incoming.received, incoming.answered - opened.response.completed
            self.metrics.overhead.observe(before + after)
        total_ms = self.forwarder.finish(opened, ok=ok, client_gone=gone)
        final = ollama.final_object(tail) if ok and opened.candidate.node is not None else None  # parsed once
        tokens, rate = ollama.speed(final)
        used = _usage(ex, final, tail, ok=ok, whole=whole, events=events)
        if ok and opened.candidate.node is None and decision.request.task is not Task.EMBEDDING:  # embeddings generate none
            tokens, rate = _endpoint_speed(opened, used, whole=whole, total_ms=total_ms)
        if self.limiter is not None:
            self.limiter.settle(ex.admission, used[1], None if used[2] else used[0])
        tenant = ex.caller.tenant if ex.caller is not None else decision.request.tenant
        self.metrics.tokens.labels("prompt", tenant or "-", opened.candidate.model.name).inc(used[0])
        self.metrics.tokens.labels("completion", tenant or "-", opened.candidate.model.name).inc(used[1])
        self.live.generated(opened.candidate.model.name, opened.candidate.node_name, used[1])
        found = signals(final, whole=whole, wants_json=ex.call.wants_json)
        if rate is not None:
            cand = opened.candidate
            self.metrics.tokens_per_s.labels(decision.route or "-", cand.model.name, cand.node_name).observe(rate)
        texts = None
        if whole and final is not None and self.judge_sample and random.random() < self.judge_sample:
            texts = (decision.request.text[-4000:], ollama.text(final)[:4000])
        self._record(ex, total_ms, ok=ok, client_gone=gone, tokens=tokens, rate=rate, found=found, texts=texts, used=used,
                     tenant=tenant)  # fmt: skip
        if self.spans is not None:
            cand = opened.candidate
            self.spans.answered(ex.trace, model=cand.model.name, node=cand.node_name, failed=opened.failed,
                                first_byte=opened.started + opened.first_byte_s)  # fmt: skip
            self.spans.end(ex.trace, status="ok" if ok else "cancelled" if gone else "error", route=decision.route)

    def _record(self, ex: Exchange, total_ms: float, *, ok: bool, client_gone: bool = False, tokens: int | None = None,
                rate: float | None = None, found: tuple[str, ...] = (), texts: tuple[str, str] | None = None,
                used: tuple[int, int, bool] = (0, 0, True), tenant: str | None = None) -> None:  # fmt: skip
        decision, opened = ex.decision, ex.opened
        self.metrics.decision.observe(ex.decision_us / 1e6)
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
                ex.request_id,
                decision.route,
                cand.model.name,
                node,
                decision.variant,
                status,
                ex.decision_us,
                min(opened.first_byte_s * 1000, total_ms),  # a whole answer's "first byte" is taken once it is all in
                total_ms,
                len(opened.failed) + 1,
                time.time(),
                tokens,
                rate,
                found,
                question=texts[0] if texts else None,
                answer=texts[1] if texts else None,
                api_key=ex.caller.name if ex.caller is not None else None,
                tenant=tenant,
                prompt_tokens=used[0],
                completion_tokens=used[1],
                estimated=used[2],
                trace_id=ex.trace.trace_id,
                **_chosen(decision),
            )
        )


def _chosen(decision: Decision) -> dict[str, Any]:
    """The quality strategy's part of an outcome record (nothing for other strategies)."""
    choice = decision.choice
    if choice is None:
        return {}
    return {"cls": choice.cls, "chosen": decision.first.model.name, "why": choice.why, "scores": choice.scores}


def _verdict_headers(
    check: Admission | asyncio.Future[Admission | None] | None, dialect: Dialect
) -> Callable[[], Mapping[str, str] | None]:
    """The answer's rate-limit headers once the caller is admitted; None while its check runs or
    when it was refused (then the answer must not go out early)."""

    def ready() -> Mapping[str, str] | None:
        admission = check
        if isinstance(check, asyncio.Future):
            if not check.done() or check.cancelled() or check.exception() is not None:
                return None
            admission = check.result()
        return door_headers(admission.headers, dialect) if isinstance(admission, Admission) else {}

    return ready


def _early(
    decision: Decision, micros: float, request_id: str, answer_now: Callable[[Reply], None],
    ready: Callable[[], Mapping[str, str] | None],
) -> Callable[[Candidate, int], Callable[[Response], None] | None]:  # fmt: skip
    """For a call whose node answer goes out as it is (``Call.early``): a hook per attempt that
    writes a node's whole answer to the client from the upstream's parser callback, before the
    request's task wakes up (the task then only accounts for it)."""

    def hook(cand: Candidate, attempt: int) -> Callable[[Response], None] | None:
        if cand.node is None:
            return None

        def send(resp: Response) -> None:
            extra = ready()
            if extra is not None and not retryable(resp.status):
                headers = route_headers(decision, cand, attempt + 1, request_id, micros)
                if extra:
                    headers.update(extra)
                answer_now(Reply(resp.status, resp.peek(), "application/json", headers))

        return send

    return hook


def _usage(
    ex: Exchange, final: Mapping[str, Any] | None, tail: bytes, *, ok: bool, whole: bool, events: int
) -> tuple[int, int, bool]:
    """(prompt, completion) tokens of an answer and whether they are the router's estimate: Ollama's
    counts, a static endpoint's ``usage`` (or its chunks), else the prompt's estimate and nothing
    generated (an answer that broke off or was left early)."""
    estimate = ex.decision.request.prompt_tokens
    if final is not None and ("prompt_eval_count" in final or "eval_count" in final):
        prompt, completion = ollama.usage(final)
        return prompt, completion, False
    if ok and ex.opened.candidate.node is None:
        counts = openai_upstream.tokens(tail, whole=whole, events=events, prompt_tokens=estimate, head=ex.opened.first[:1024])
        if counts is not None:
            return counts
    return estimate, 0, True


def _endpoint_speed(
    opened: Opened, used: tuple[int, int, bool], *, whole: bool, total_ms: float
) -> tuple[int | None, float | None]:
    """Generated tokens and tokens per second of a static endpoint's answer: its usage (or its
    chunks) over the time it took to generate (a stream's after its first byte)."""
    if used[1] <= 0:
        return None, None
    seconds = total_ms / 1000 - (0.0 if whole else opened.first_byte_s)
    return used[1], (used[1] / seconds if seconds > 0 else None)


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
    if decision.choice is not None:
        headers["x-route-class"], headers["x-route-why"] = decision.choice.cls, decision.choice.why
        if decision.choice.drawn:
            headers["x-route-scores"] = decision.choice.header()
    client = decision.request.client
    if client is not None and (report := client.let(cand.model.name, cand.model.client).report):
        headers[OVERRIDDEN] = report  # what of the request the model's client policy dropped or clamped
    return headers
