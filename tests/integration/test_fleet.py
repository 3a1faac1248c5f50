"""Agents on simulated Ollama nodes against a real etcd and the control plane: apply, tune with
wait=applied, fleet status, unreachable Ollama, agent restarts, bad tuning input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ollama
import pytest

from controlplane.store.keys import KeySpace
from schemas.fleet import NodeList
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc
from tests.sim.engine import SimSettings

pytestmark = pytest.mark.etcd

CONFIG = [
    model_doc("chat", tag="llama3.1:8b", keep_alive="10m"),
    model_doc(
        "assistant", tag="assistant:v1", base="llama3.1:8b", system_prompt="You are terse.",
        options={"temperature": 0.3, "num_ctx": 4096}, labels=None,
    ),
    model_doc("embedder", tag="nomic-embed-text", caps=["embed"], placement={"node_selector": {"role": "embed"}}),
]  # fmt: skip
for doc in CONFIG:
    doc["spec"].pop("labels", None)
CONFIG[1]["metadata"]["labels"] = {"team": "support"}


@pytest.fixture
async def fleet(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(etcd_server.url, keys, tmp_path)
    await f.start_control_plane()
    for i in range(3):
        await f.add_node(f"node-{i}", labels={"role": "embed"} if i == 2 else {"role": "chat"})
    yield f
    await f.close()


async def apply(fleet: Fleet, docs: list[dict[str, Any]]) -> int:
    resp = await fleet.api.post("/api/v1/config:apply", json={"objects": docs})
    assert resp.status_code == 200, resp.text
    revision: int = resp.json()["revision"]
    return revision


async def models_status(fleet: Fleet) -> dict[str, Any]:
    resp = await fleet.api.get("/api/v1/models/status")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def all_ready(fleet: Fleet, timeout_s: float = 10.0) -> dict[str, Any]:
    """Poll the fleet view until every model is ready and applied on every node that should hold it."""
    latest: dict[str, Any] = {}
    async with asyncio.timeout(timeout_s):
        while not latest or not all(m["ready_nodes"] == m["desired_nodes"] > 0 for m in latest["models"]):
            await asyncio.sleep(0.05)
            latest = await models_status(fleet)
    return latest


def calls(fleet: Fleet, node: str, path: str) -> int:
    return sum(1 for _m, p, _model in fleet.sims[node].engine.calls if p == path)


async def test_apply_then_tune_reaches_every_node(fleet: Fleet) -> None:
    revision = await apply(fleet, CONFIG)
    await all_ready(fleet)
    status = await models_status(fleet)
    by_model = {m["model"]: m for m in status["models"]}
    assert by_model["chat"]["desired_nodes"] == 3 and by_model["embedder"]["desired_nodes"] == 1
    assert [n["node"] for n in by_model["embedder"]["nodes"]] == ["node-2"]
    for name, sim in fleet.sims.items():
        engine = sim.engine
        assert "llama3.1:8b" in engine.models and "assistant:v1" in engine.models
        assert engine.models["assistant:v1"].system == "You are terse."
        assert {"llama3.1:8b", "assistant:v1"} <= set(engine.runners)
        assert ("nomic-embed-text:latest" in engine.models) == (name == "node-2")
        assert calls(fleet, name, "/api/pull") == (2 if name == "node-2" else 1)
    assert all(n["applied_revision"] >= revision and n["health"] == "ready" for n in status["nodes"])
    async def measured() -> bool:  # sizes come with the agent's next look at /api/ps after a load
        listed = NodeList.model_validate((await fleet.api.get("/api/v1/nodes")).json())
        return all(n.memory_used_bytes > 0 for n in listed.nodes)

    await fleet.eventually(measured, timeout_s=10)
    for node in NodeList.model_validate((await fleet.api.get("/api/v1/nodes")).json()).nodes:  # the UI's fleet screen
        assert node.heartbeat_age_s is not None and 0 <= node.heartbeat_age_s < 30 and node.lag == 0
        assert node.ollama_version and node.vram_used_bytes > 0 and "llama3.1:8b" in node.loaded_models

    resp = await fleet.api.put(
        "/api/v1/tune?wait=applied&timeout=10", json={"model": "assistant", "options": {"temperature": 0.2, "num_ctx": 8192}}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["complete"] and body["changed"] and body["not_applied"] == []
    assert sorted(n["node"] for n in body["nodes"]) == ["node-0", "node-1", "node-2"]
    for sim in fleet.sims.values():
        shown = await ollama.AsyncClient(host=sim.url).show("assistant:v1")
        assert "8192" in (shown.parameters or "") and "0.2" in (shown.parameters or "")
        assert sim.engine.runners["assistant:v1"].context_length == 8192  # reloaded and warmed again
    doc = (await fleet.api.get("/api/v1/config/models/assistant")).json()
    assert doc["spec"]["options"] == {"temperature": 0.2, "num_ctx": 8192}
    assert doc["metadata"]["revision"] == body["revision"]

    by_label = await fleet.api.put("/api/v1/tune?wait=applied", json={"selector": {"team": "support"}, "keep_alive": "-1"})
    assert by_label.status_code == 200 and by_label.json()["models"] == ["assistant"]
    assert all(s.engine.runners["assistant:v1"].expires_at.year > 2100 for s in fleet.sims.values())


async def test_unreachable_ollama_and_agent_restart(fleet: Fleet) -> None:
    await apply(fleet, CONFIG[:2])
    await all_ready(fleet)

    await fleet.sims["node-1"].stop()

    async def health_is(node: str, wanted: str | None) -> bool:
        nodes = (await fleet.api.get("/api/v1/nodes")).json()["nodes"]
        return next((n["health"] for n in nodes if n["node"] == node), None) == wanted

    await fleet.eventually(lambda: health_is("node-1", "ollama-unreachable"), timeout_s=3)  # within the lease TTL
    resp = await fleet.api.put("/api/v1/tune?wait=applied&timeout=3", json={"model": "assistant", "options": {"seed": 7}})
    assert resp.status_code == 202, resp.text  # written, but one node cannot confirm it
    body = resp.json()
    assert body["not_applied"] == ["node-1"] and not body["complete"]
    assert {n["node"]: n["state"] for n in body["nodes"]} == {"node-0": "applied", "node-1": "unreachable", "node-2": "applied"}
    await fleet.sims["node-1"].start()
    await fleet.eventually(lambda: health_is("node-1", "ready"), timeout_s=5)
    await all_ready(fleet)  # node-1 caught up with the tune it missed
    pulls = {n: calls(fleet, n, "/api/pull") for n in fleet.sims}
    creates = {n: calls(fleet, n, "/api/create") for n in fleet.sims}

    await fleet.stop_agent("node-0")  # a clean stop revokes the lease: the node leaves the fleet at once
    await fleet.eventually(lambda: health_is("node-0", None), timeout_s=3)
    agent = await fleet.start_agent("node-0")
    await fleet.stop_agent("node-1", crash=True)  # killed and restarted at once: its old lease is still alive
    await fleet.start_agent("node-1")
    await all_ready(fleet)
    await fleet.until(lambda: agent.status.applied_revision > 0)
    await asyncio.sleep(3.5)  # the crashed agent's lease expires: the keys the new agent wrote must survive it
    assert {n["node"]: n["health"] for n in (await fleet.api.get("/api/v1/nodes")).json()["nodes"]} == {
        "node-0": "ready", "node-1": "ready", "node-2": "ready"}  # fmt: skip
    assert {n: calls(fleet, n, "/api/pull") for n in fleet.sims} == pulls  # nothing pulled twice
    assert {n: calls(fleet, n, "/api/create") for n in fleet.sims} == creates


async def test_bad_tuning_input_is_422_and_writes_nothing(fleet: Fleet) -> None:
    revision = await apply(fleet, CONFIG[:2])
    bad = [
        ({"model": "nope", "options": {"temperature": 0.1}}, "no Model 'nope'"),
        ({"model": "assistant", "options": {"temperature": 9}}, "less than or equal to 5"),
        ({"model": "assistant", "options": {"temprature": 0.1}}, "options.temprature"),
        ({"model": "assistant", "options": {"num_ctx": 99999}}, "exceeds context_window"),
        ({"model": "assistant"}, "changes nothing"),
        ({"model": "assistant", "selector": {"a": "b"}, "keep_alive": "1m"}, "exactly one target"),
        ({"selector": {"team": "nobody"}, "keep_alive": "1m"}, "no Model has the labels"),
        ({"model": "assistant", "unset": ["bogus"]}, "cannot unset"),
    ]
    for body, expected in bad:
        resp = await fleet.api.put("/api/v1/tune", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert expected in resp.text, (expected, resp.text)
    status = (await fleet.api.get("/api/v1/status")).json()
    assert status["revision"] == revision
    history = (await fleet.api.get("/api/v1/history")).json()
    assert {item["revision"] for item in history["items"]} == {revision}  # only the apply


async def test_pull_progress_shows_in_status(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> None:
    f = Fleet(etcd_server.url, keys, tmp_path)
    try:
        await f.start_control_plane()
        await f.add_node("slow", sim=SimSettings(pull_s=2.0))
        await apply(f, [model_doc("chat", tag="llama3.1:8b")])
        seen: list[dict[str, Any]] = []

        async def pulling() -> bool:
            node = (await models_status(f))["models"][0]["nodes"][0]
            seen.append(node)
            cond = node["condition"] or {}
            return cond.get("type") == "Pulling" and 0 < cond.get("progress", 0) < 1

        await f.eventually(pulling, timeout_s=5)
        await all_ready(f)
        assert not seen[-1]["present"] and seen[-1]["applied"] is False
    finally:
        await f.close()
