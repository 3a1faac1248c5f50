"""One reconcile pass against a simulated Ollama: idempotence, errors mid-pull, permanent
failures, cleanup; and start-time settings applied by restarting a supervised Ollama."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

from agents.sidecar.agent import Agent
from agents.sidecar.desired import Desired, desired_model
from agents.sidecar.node import OllamaNode
from agents.sidecar.reconcile import Reconciler
from controlplane.store.keys import KeySpace
from schemas.model import Model
from schemas.status import ConditionType
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer, free_port
from tests.helpers import model_doc, route_doc
from tests.sim.engine import Fault
from tests.sim.server import SimServer

MUTATING = {"/api/pull", "/api/create", "/api/delete", "/api/generate", "/api/embed", "/api/copy"}


def desired(*docs: dict[str, object], revision: int = 7, prune: bool = False) -> Desired:
    models = [
        desired_model(Model.model_validate({**d, "metadata": {"name": d["metadata"]["name"], "revision": revision}}))
        for d in docs
    ]  # type: ignore[index, dict-item]
    return Desired(revision, {m.name: m for m in models}, prune=prune)


CHAT = model_doc("chat", tag="llama3.1:8b")
HELPER = model_doc(
    "helper", tag="helper:v1", base="llama3.1:8b", system_prompt="Be kind.", options={"num_ctx": 2048, "top_p": 0.9}
)
EMBED = model_doc("embed", tag="nomic-embed-text", caps=["embed"])


async def test_second_pass_changes_nothing(sim: SimServer) -> None:
    rec = Reconciler(OllamaNode(sim.url))
    want = desired(CHAT, HELPER, EMBED)
    first = await rec.reconcile(want)
    assert first.ok and first.mutations > 0
    assert {c.type for c in rec.conditions.values()} == {ConditionType.READY}
    assert sim.engine.runners["helper:v1"].context_length == 2048
    sim.engine.calls.clear()
    second = await rec.reconcile(want)
    assert second.ok and second.mutations == 0
    assert not [c for c in sim.engine.calls if c[1] in MUTATING], sim.engine.calls

    # A fresh agent (nothing remembered) verifies with /api/show instead of creating again.
    sim.engine.calls.clear()
    fresh = await Reconciler(OllamaNode(sim.url)).reconcile(want)
    assert fresh.ok and fresh.mutations == 0
    assert not [c for c in sim.engine.calls if c[1] in MUTATING]


async def test_error_mid_pull_is_retried_and_bad_model_fails_alone(sim: SimServer) -> None:
    sim.engine.faults.append(Fault("/api/pull", status=500, message="connection reset by registry", mid_stream=True))
    missing = model_doc("ghost", tag="missing-model:1b")
    rec = Reconciler(OllamaNode(sim.url), max_wait_s=0.05)
    result = await rec.reconcile(desired(CHAT, missing))
    assert not result.ok
    assert rec.conditions["chat"].type is ConditionType.READY  # retried after the broken stream
    ghost = rec.conditions["ghost"]
    assert ghost.type is ConditionType.FAILED and "does not exist" in ghost.message and ghost.revision == 7
    assert [c[1] for c in sim.engine.calls].count("/api/pull") == 3  # chat twice (one broken), ghost once (permanent)
    assert any("ghost" in e for e in rec.errors)


async def test_changes_recreate_rewarm_unload_and_prune(sim: SimServer) -> None:
    rec = Reconciler(OllamaNode(sim.url))
    assert (await rec.reconcile(desired(CHAT, HELPER))).ok
    tuned = model_doc("helper", tag="helper:v1", base="llama3.1:8b", system_prompt="Be brief.", options={"num_ctx": 4096})
    assert (await rec.reconcile(desired(CHAT, tuned, revision=8))).ok
    assert sim.engine.models["helper:v1"].system == "Be brief."
    assert sim.engine.runners["helper:v1"].context_length == 4096
    assert (await rec.reconcile(desired(CHAT, revision=9))).ok  # helper no longer placed here
    assert "helper:v1" not in sim.engine.runners and "helper:v1" in sim.engine.models  # unloaded, kept on disk
    assert (await rec.reconcile(desired(CHAT, revision=10, prune=True))).ok
    assert "helper:v1" not in sim.engine.models and "llama3.1:8b" in sim.engine.models
    assert set(rec.conditions) == {"chat"}


async def test_never_warms_more_models_than_the_node_holds(sim: SimServer) -> None:
    """Ollama holds 3 runners (OLLAMA_MAX_LOADED_MODELS): warming a fourth would evict one, and the
    next pass would load that one again, forever."""
    rec = Reconciler(OllamaNode(sim.url))
    docs = [model_doc(f"m{i}", tag=f"m{i}:1b") for i in range(4)]
    assert (await rec.reconcile(desired(*docs), max_loaded=3)).ok
    assert sorted(sim.engine.runners) == ["m0:1b", "m1:1b", "m2:1b"]
    assert rec.conditions["m3"].reason == "NotPreloaded" and rec.conditions["m3"].type is ConditionType.READY
    sim.engine.calls.clear()
    assert (await rec.reconcile(desired(*docs), max_loaded=3)).mutations == 0  # no churn on later passes
    # an autoscaled replica placed here comes first (the autoscaler counted the idle preloads as room)
    replica = model_doc("r", tag="r:1b", placement={"autoscale": True, "max_replicas": 2})
    assert (await rec.reconcile(desired(*docs, replica), max_loaded=3)).ok
    assert "r:1b" in sim.engine.runners and len(sim.engine.runners) == 3  # Ollama evicted an idle preload for it
    assert (await rec.reconcile(desired(*docs, replica), max_loaded=3)).mutations == 0


async def test_unreachable_ollama_fails_every_model() -> None:
    rec = Reconciler(OllamaNode(f"http://127.0.0.1:{free_port()}"))
    result = await rec.reconcile(desired(CHAT))
    assert not result.ok and result.observed is None
    assert rec.conditions["chat"].reason == "OllamaUnreachable"


async def test_supervised_ollama_restarts_for_server_settings(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> None:
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    await fleet.start_control_plane()
    port = free_port()
    fleet.sims["free"] = await _started(free_port())
    fleet.labels["free"] = {"pool": "big"}
    try:
        # "sup": the agent runs `python -m tests.sim` itself; "free": an Ollama the agent does not own.
        fleet.sims["sup"] = SimServer(port)  # only its URL is used; the agent starts the process
        fleet.labels["sup"] = {"pool": "big"}
        sup = await fleet.start_agent("sup", ollama_command=[sys.executable, "-m", "tests.sim", "--port", str(port)], drain_s=0)
        free = await fleet.start_agent("free")
        # An agent that does not run Ollama assumes it started with the settings configured when the
        # agent came up; later changes are reported as needing a restart.
        await fleet.until(lambda: free.status.applied_revision > 0)
        pool = {
            "kind": "NodePool",
            "metadata": {"name": "big"},
            "spec": {"node_selector": {"pool": "big"}, "server": {"num_parallel": 2}},
        }
        resp = await fleet.api.post("/api/v1/config:apply", json={"objects": [pool, CHAT]})
        assert resp.status_code == 200, resp.text
        revision = resp.json()["revision"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as raw:
            await fleet.until(
                lambda: sup.status.server_settings == {"OLLAMA_NUM_PARALLEL": "2"} and sup.status.applied_revision >= revision,
                timeout_s=20,
                what=lambda: sup.status,
            )
            state = (await raw.get("/sim/state")).json()
            assert state["settings"]["num_parallel"] == 2 and "llama3.1:8b:latest" not in state["models"]
            assert "llama3.1:8b" in state["loaded"]  # warmed again after the restart
        await fleet.until(
            lambda: free.status.restart_required == ["OLLAMA_NUM_PARALLEL=2"], timeout_s=10, what=lambda: free.status
        )
        assert free.status.server_settings == {} and not free.status.supervised and sup.status.supervised
    finally:
        await fleet.close()


async def _started(port: int) -> SimServer:
    server = SimServer(port)
    await server.start()
    return server


async def test_agent_told_what_ollama_runs_with_reports_restart_required_until_it_does(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path
) -> None:
    """In Kubernetes another container starts Ollama with the chart's OLLAMA_* variables, which the
    chart also gives the agent (LLMTUNE_AGENT__OLLAMA_ENVIRONMENT): the agent compares the pool's
    start-time settings with those, not with what the pool said when the agent started."""
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    await fleet.start_control_plane()
    for name in ("old-pod", "new-pod"):
        fleet.sims[name] = await _started(free_port())
        fleet.labels[name] = {"pool": "big"}
    try:
        old = await fleet.start_agent("old-pod", ollama_environment={"OLLAMA_NUM_PARALLEL": "4"})
        new = await fleet.start_agent("new-pod", ollama_environment={"OLLAMA_NUM_PARALLEL": "2"})
        # no pool yet: both run with a setting nobody asked for
        await fleet.until(lambda: old.status.restart_required == ["OLLAMA_NUM_PARALLEL=(default)"], what=lambda: old.status)
        pool = {"kind": "NodePool", "metadata": {"name": "big"},
                "spec": {"node_selector": {"pool": "big"}, "server": {"num_parallel": 2}}}  # fmt: skip
        resp = await fleet.api.post("/api/v1/config:apply", json={"objects": [pool]})
        assert resp.status_code == 200, resp.text
        await fleet.until(lambda: old.status.restart_required == ["OLLAMA_NUM_PARALLEL=2"], what=lambda: old.status)
        await fleet.until(lambda: new.status.restart_required == [], what=lambda: new.status)
        assert old.status.server_settings == {"OLLAMA_NUM_PARALLEL": "4"}
        assert new.status.server_settings == {"OLLAMA_NUM_PARALLEL": "2"}
        # Ollama restarting in the same pod (same variables) changes nothing
        await fleet.sims["old-pod"].stop()
        await fleet.until(lambda: not old.status.ollama_reachable, what=lambda: old.status)
        fleet.sims["old-pod"] = await _started(int(fleet.sims["old-pod"].url.rsplit(":", 1)[1]))
        await fleet.until(lambda: old.status.ollama_reachable, what=lambda: old.status)
        assert old.status.restart_required == ["OLLAMA_NUM_PARALLEL=2"]
    finally:
        await fleet.close()


async def test_supervised_restarts_wait_for_requests_in_flight_and_take_turns_in_a_pool(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path
) -> None:
    """Two supervised nodes of one pool get new start-time settings while a streamed answer is in
    flight on each: each node restarts only after every router has seen it draining and finished
    its answer there, and never while the other node of its pool is restarting."""
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    await fleet.start_control_plane()
    agents: dict[str, Agent] = {}
    try:
        for name in ("gpu-a", "gpu-b"):
            port = free_port()
            fleet.sims[name] = SimServer(port)  # its URL only: the agent starts `python -m tests.sim` itself
            fleet.labels[name] = {"pool": "gpu"}
            agents[name] = await fleet.start_agent(
                name, ollama_command=[sys.executable, "-m", "tests.sim", "--port", str(port)], drain_s=20
            )
        pool = {"kind": "NodePool", "metadata": {"name": "gpu"}, "spec": {"node_selector": {"pool": "gpu"}}}
        resp = await fleet.api.post("/api/v1/config:apply", json={"objects": [pool, CHAT, route_doc("default", "chat")]})
        assert resp.status_code == 200, resp.text
        await fleet.until(lambda: all(a.status.applied_revision >= resp.json()["revision"] for a in agents.values()),
                          timeout_s=20, what=lambda: [a.status for a in agents.values()])  # fmt: skip
        url = await fleet.start_router()
        for name in agents:  # every answer on either node stalls for 2 s after its second token
            async with httpx.AsyncClient(base_url=fleet.sims[name].url) as sim:
                fault = {"path": "/api/chat", "pause_after": 2, "pause_s": 2.0, "times": -1}
                assert (await sim.post("/sim/faults", json=fault)).status_code == 204

        both_held: list[float] = []
        restarted: dict[str, float] = {}

        async def watch() -> None:  # the turns, and when each node's Ollama came back with the new settings
            while True:
                if all(a.restarts and a.restarts.holding for a in agents.values()):
                    both_held.append(time.monotonic())
                for name, a in agents.items():
                    if a.status.server_settings == {"OLLAMA_NUM_PARALLEL": "2"} and name not in restarted:
                        restarted[name] = time.monotonic()
                await asyncio.sleep(0.005)

        async def ask(client: httpx.AsyncClient) -> tuple[float, list[dict[str, object]]]:
            body = {"model": "chat", "messages": [{"role": "user", "content": "tell me"}], "stream": True}
            async with client.stream("POST", "/api/chat", json=body) as answer:
                assert answer.status_code == 200
                lines = [json.loads(line) async for line in answer.aiter_lines() if line]
            return time.monotonic(), lines

        watcher = asyncio.create_task(watch())
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            asks = [asyncio.create_task(ask(client)) for _ in range(4)]
            await fleet.until(lambda: sum(fleet.router.core.live.in_flight_by_node().values()) == 4, timeout_s=5,
                              what=fleet.router.core.live.in_flight_by_node)  # fmt: skip
            busy = set(fleet.router.core.live.in_flight_by_node())
            pool["spec"]["server"] = {"num_parallel": 2}  # type: ignore[index]
            resp = await fleet.api.post("/api/v1/config:apply", json={"objects": [pool]})
            assert resp.status_code == 200, resp.text
            answers = await asyncio.gather(*asks)
            await fleet.until(lambda: len(restarted) == 2, timeout_s=30, what=lambda: [a.status for a in agents.values()])
        watcher.cancel()
        for _, lines in answers:  # every answer finished whole: no restart cut one short
            assert lines[-1]["done"] is True and "error" not in lines[-1], lines[-1]
        last_answer = max(at for at, _ in answers)
        for name in busy:  # the drain of a node with answers in flight waited for them
            assert restarted[name] > last_answer - 0.2, (name, restarted, last_answer)
        assert both_held == [], "two nodes of one pool restarted at once"
        assert max(restarted.values()) - last_answer < 10, "a drain waited out its bound (20 s) with nothing in flight"
        first, second = sorted(restarted.values())
        assert second - first > 0.05
    finally:
        await fleet.close()
