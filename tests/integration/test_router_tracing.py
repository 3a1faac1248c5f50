"""Tracing through the router: the W3C trace context reaches the simulator (the caller's trace,
the router's span as parent) and the outcome record; with an OTLP endpoint the router's spans
reach a collector (ours, a gRPC OTLP receiver) in the caller's trace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from controlplane.store.keys import KeySpace
from router.core import Outcome
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer, free_port
from tests.helpers import model_doc

pytestmark = pytest.mark.etcd
TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """What an OpenTelemetry collector receives over OTLP/gRPC."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:  # the generated service names it so
        self.spans += [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    found = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield found, f"http://127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
async def fleet(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane()
    await f.add_node("node-0")
    assert (await f.api.post("/api/v1/config:apply", json={"objects": [model_doc("m", tag="llama3.2:1b")]})).status_code == 200
    yield f
    await f.close()


async def routable(f: Fleet, url: str) -> None:
    async def ready() -> bool:
        async with httpx.AsyncClient() as c:
            return bool((await c.get(f"{url}/api/tags")).json()["models"])

    await f.eventually(ready, timeout_s=15)


async def test_the_trace_context_reaches_the_node_and_the_outcome_record(fleet: Fleet) -> None:
    url = await fleet.start_router()
    await routable(fleet, url)
    outcomes: list[Outcome] = []
    fleet.router.core.sink = type("Collect", (), {"record": lambda _self, o: outcomes.append(o)})()
    sim = fleet.sims["node-0"].engine
    sim.traces.clear()
    body = {"model": "m", "prompt": "hi", "stream": False}
    headers = {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=abc"}
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.post("/api/generate", json=body, headers=headers)).status_code == 200
        assert (await c.post("/api/generate", json=body)).status_code == 200  # no context: a new trace
        assert (await c.post("/api/generate", json=body, headers={"traceparent": "00-" + "0" * 32 + "-bad"})).status_code == 200
    (path, sent, state), (_, fresh, _), (_, replaced, _) = list(sim.traces)
    version, trace, parent, flags = sent.split("-")
    assert (path, version, trace, flags, state) == ("/api/generate", "00", TRACE, "01", "vendor=abc")
    assert parent != PARENT and len(parent) == 16  # the router's span is the node's parent
    assert fresh.split("-")[1] not in (TRACE, "0" * 32) and replaced.split("-")[1] != "0" * 32
    await fleet.until(lambda: len(outcomes) == 3, timeout_s=5)
    assert [o.trace_id for o in outcomes] == [TRACE, fresh.split("-")[1], replaced.split("-")[1]]


async def test_spans_reach_an_otlp_collector_in_the_callers_trace(fleet: Fleet, collector: tuple[Collector, str]) -> None:
    found, endpoint = collector
    url = await fleet.start_router(otlp_endpoint=endpoint)
    await routable(fleet, url)
    sim = fleet.sims["node-0"].engine
    sim.traces.clear()
    async with httpx.AsyncClient(base_url=url) as c:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        resp = await c.post("/api/chat", json=body, headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert resp.status_code == 200
    await fleet.until(lambda: len(found.spans) >= 3, timeout_s=10)
    by_name = {s.name: s for s in found.spans}
    assert {"llmtune.router.request", "llmtune.router.decide", "llmtune.router.upstream"} <= set(by_name)
    request, upstream = by_name["llmtune.router.request"], by_name["llmtune.router.upstream"]
    assert all(s.trace_id.hex() == TRACE for s in found.spans)
    assert request.parent_span_id.hex() == PARENT and upstream.parent_span_id == request.span_id
    assert sim.traces[-1][1].split("-")[2] == upstream.span_id.hex()  # the node's parent is the upstream span
    assert [e.name for e in upstream.events] == ["first byte"]
    assert {a.key: a.value.string_value for a in upstream.attributes if a.key == "llmtune.node"} == {"llmtune.node": "node-0"}

