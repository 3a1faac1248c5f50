"""W3C trace context through the router, and optional OpenTelemetry spans.

Every request carries a trace: the caller's ``traceparent`` (and ``tracestate``) when it sent a
valid one, else a new trace. Each upstream attempt gets a ``traceparent`` naming the router's own
span as its parent, and the outcome record names the trace. With an OTLP endpoint configured
(``LLMTUNE_ROUTER__OTLP_ENDPOINT``) the router also exports spans: the request (server), the
decision, a wait in the admission queue, and the upstream call (client) with its failed attempts
and the first byte as events. Without one nothing of OpenTelemetry is imported or called.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_random = random.Random()  # ids need uniqueness, not secrecy: os.urandom cost a system call per request


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    span_id: str  # the router's span: the parent of every upstream attempt
    flags: str
    state: str | None = None
    spans: Any = None  # the request's OpenTelemetry spans, when they are exported

    def upstream_headers(self) -> dict[str, str]:
        headers = {"traceparent": f"00-{self.trace_id}-{self.span_id}-{self.flags}"}
        if self.state:
            headers["tracestate"] = self.state
        return headers


def incoming(headers: Mapping[str, str]) -> Trace:
    """The request's trace: the caller's (version 00, ids not all zero), else a new one."""
    raw = headers.get("traceparent")
    span = f"{_random.getrandbits(64):016x}"
    if raw is not None:
        found = _TRACEPARENT.match(raw.strip())
        if found is not None and found[1] != _ZERO_TRACE and found[2] != _ZERO_SPAN:
            state = headers.get("tracestate")
            return Trace(found[1], span, found[3], state[:512] if state else None)
    return Trace(f"{_random.getrandbits(128):032x}", span, "01")


class Spans:
    """OpenTelemetry spans of the router's requests, exported by OTLP (gRPC) in batches."""

    def __init__(self, endpoint: str, *, service: str = "llmtune-router", schedule_delay_ms: int = 1000) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms))
        self._tracer = self._provider.get_tracer("llmtune.router")
        self._propagator = TraceContextTextMapPropagator()
        self._kind, self._in_context = SpanKind, set_span_in_context

    def start(self, headers: Mapping[str, str], received: float) -> Trace:
        """The request's span (a child of the caller's, if it sent one) and the upstream span under it."""
        parent = self._propagator.extract(dict(headers))
        started = _ns(received)
        request = self._tracer.start_span("llmtune.router.request", context=parent, kind=self._kind.SERVER, start_time=started)
        upstream = self._tracer.start_span("llmtune.router.upstream", context=self._in_context(request), kind=self._kind.CLIENT)
        context = upstream.get_span_context()
        state = headers.get("tracestate")
        return Trace(f"{context.trace_id:032x}", f"{context.span_id:016x}", f"{int(context.trace_flags):02x}",
                     state[:512] if state else None, (request, upstream))  # fmt: skip

    def step(self, trace: Trace, name: str, started: float, ended: float, attributes: Mapping[str, Any] | None = None) -> None:
        """A finished step of the request (the decision, a wait in the queue), as a child span."""
        request, _ = trace.spans
        span = self._tracer.start_span(name, context=self._in_context(request), start_time=_ns(started))
        span.set_attributes({k: v for k, v in (attributes or {}).items() if v is not None})
        span.end(end_time=_ns(ended))

    def answered(self, trace: Trace, *, model: str, node: str, failed: tuple[str, ...], first_byte: float) -> None:
        _, upstream = trace.spans
        upstream.set_attributes({"llmtune.model": model, "llmtune.node": node, "llmtune.attempts": len(failed) + 1})
        for why in failed:
            upstream.add_event("attempt failed", {"llmtune.reason": why[:500]})
        upstream.add_event("first byte", timestamp=_ns(first_byte))

    def end(self, trace: Trace, *, status: str, route: str | None = None, error: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        request, upstream = trace.spans
        for span in (upstream, request):
            if status != "ok":
                span.set_status(Status(StatusCode.ERROR, error or status))
        request.set_attributes({"llmtune.status": status, **({"llmtune.route": route} if route else {})})
        upstream.end()
        request.end()

    def close(self) -> None:
        self._provider.shutdown()


def _ns(perf: float) -> int:
    """A perf_counter instant as Unix nanoseconds."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)
