"""The conformance suite's fleet: one simulated Ollama node behind an agent, and the router with
two models of the same weights: ``chat`` served by the node (the router translates between the
APIs), ``hosted`` by the node's own OpenAI-compatible API as a static upstream (our OpenAI-compatible
server fixture, tests/sim/openai_compat.py). Every test runs through the router, with each door's
official client where it has one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.store.keys import KeySpace
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc
from tests.sim.engine import Engine

CAPS = ["chat", "completion", "tools", "vision", "json"]
#: the two ways a model is served: by an Ollama node, and by a static OpenAI-compatible endpoint
UPSTREAMS = ["chat", "hosted"]


@dataclass
class Stack:
    fleet: Fleet
    url: str  # the router

    @property
    def engine(self) -> Engine:
        """The simulated node (behind both models)."""
        return self.fleet.sims["node-0"].engine


@pytest.fixture
async def stack(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[Stack]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane()
    await f.add_node("node-0")
    sim_url = f.sims["node-0"].url
    objects = [
        model_doc("chat", tag="llama3.2:1b", caps=CAPS),
        model_doc("hosted", tag="llama3.2:1b", caps=CAPS, provider="openai", endpoint=f"{sim_url}/v1"),
        model_doc("embedder", tag="nomic-embed-text", caps=["embed"]),
    ]
    resp = await f.api.post("/api/v1/config:apply", json={"objects": objects})
    assert resp.status_code == 200, resp.text

    await f.until_ready(models=3)  # the endpoint's model has no node to wait for
    url = await f.start_router()
    await f.until_routable(url, models=3)
    yield Stack(f, url)
    await f.close()
