"""The agent's own HTTP endpoint: ``/healthz``, ``/metrics`` (Prometheus) and ``/status``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.sidecar.agent import Agent


class OllamaCalls(Collector):
    """Calls the agent made to Ollama, by operation and result (Ollama has no metrics endpoint)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("llmtune_agent_ollama_calls", "Calls to Ollama", labels=["op", "result"])
        for (op, result), count in sorted(self._agent.node.calls.items()):
            family.add_metric([op, result], count)
        yield family


def create_app(agent: Agent) -> Starlette:
    agent.registry.register(OllamaCalls(agent))

    async def healthz(_r: Request) -> Response:
        ok = agent.informer.synced and agent.keeper.lease_id != 0
        return JSONResponse({"ok": ok, "ollama_reachable": agent.status.ollama_reachable}, status_code=200 if ok else 503)

    async def metrics(_r: Request) -> Response:
        return Response(generate_latest(agent.registry), media_type=CONTENT_TYPE_LATEST)

    async def status(_r: Request) -> Response:
        return JSONResponse(agent.status.model_dump(mode="json", exclude_none=True))

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics), Route("/status", status)])
