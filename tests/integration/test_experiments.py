"""Experiment results from the monitor's data: per-variant figures with intervals, the primary
metric's test against the baseline (a planted difference found, identical variants not), the
probability of being best, guardrails, and 404 for an unknown experiment."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controlplane.api.app import create_app
from controlplane.db.engine import make_engine
from controlplane.services.monitor import OutcomeStore
from controlplane.settings import Settings
from controlplane.store.keys import KeySpace
from schemas.monitor import OutcomeRecord
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc, route_doc

pytestmark = pytest.mark.etcd
ADMIN = {"Authorization": "Bearer admin-secret"}


def experiment(name: str, route: str, metric: str) -> dict[str, object]:
    variants = [{"name": "a", "model": "small"}, {"name": "b", "model": "big"}]
    rails = {"max_error_rate": 0.2, "max_p95_latency_ms": 5000, "min_samples": 100}
    spec = {"route": route, "state": "running", "variants": variants, "primary_metric": metric, "guardrails": rails}
    return {"kind": "Experiment", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def client(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace) -> Iterator[tuple[TestClient, str]]:
    db_url = f"sqlite:///{tmp_path / 'meta.db'}"
    settings = Settings(store={"endpoints": [etcd_server.url], "namespace": keys.namespace}, db={"url": db_url},
                        auth={"bootstrap_token": "admin-secret"}, rag={"data_dir": tmp_path / "rag"})  # fmt: skip
    with TestClient(create_app(settings)) as c:
        objects = [model_doc("small", tag="small:1b", ctx=8192), model_doc("big", tag="big:70b", ctx=8192),
                   route_doc("chat", "small", experiment="rates"), route_doc("fast", "small", experiment="speed"),
                   experiment("rates", "chat", "success_rate"), experiment("speed", "fast", "latency")]  # fmt: skip
        resp = c.post("/api/v1/config:apply", json={"objects": objects}, headers=ADMIN)
        assert resp.status_code == 200, resp.text
        yield c, db_url


def outcomes(route: str, variant: str, n: int, *, error_rate: float, latency: float, rng: random.Random) -> list[OutcomeRecord]:
    now = time.time()
    return [OutcomeRecord(key=f"{route}-{variant}-{i}", at=now - 10, id=f"{route}-{variant}-{i}", route=route, variant=variant,
                          model="small" if variant == "a" else "big", node="n0", decision_us=20, ttft_ms=5, attempts=1,
                          status="error" if rng.random() < error_rate else "ok", total_ms=rng.gauss(latency, 60))
            for i in range(n)]  # fmt: skip


def view_until(c: TestClient, check: Callable[[Any], bool], name: str = "rates") -> None:
    """Wait until the control plane's watched view of experiment ``name`` passes ``check``."""
    view = c.app.state.runtime.view  # type: ignore[attr-defined]
    for _ in range(200):
        stored = view.state.get(("experiments", name))
        if stored is not None and check(stored.obj):
            return
        time.sleep(0.02)
    raise AssertionError(f"the view of {name} never passed the check")


def results(c: TestClient, name: str) -> dict[str, object]:
    for _ in range(50):  # the control plane's view follows etcd within milliseconds
        resp = c.get(f"/api/v1/experiments/{name}/results", headers=ADMIN)
        if resp.status_code != 404:
            break
        time.sleep(0.05)
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


def test_planted_difference_is_found_and_guardrail_breached(client: tuple[TestClient, str]) -> None:
    c, db_url = client
    rng = random.Random(8)
    records = outcomes("chat", "a", 600, error_rate=0.08, latency=400, rng=rng) + outcomes("chat", "b", 600, error_rate=0.25,
                                                                                         latency=400, rng=rng)  # fmt: skip
    OutcomeStore(make_engine(db_url)).apply([(f"1-{i}", r) for i, r in enumerate(records)])
    body = results(c, "rates")
    a, b = body["variants"]  # type: ignore[misc]
    assert a["requests"] == 600 and b["requests"] == 600
    assert a["success_rate_ci95"][0] < a["success_rate"] < a["success_rate_ci95"][1]
    assert a["guardrails_breached"] == [] and b["guardrails_breached"][0].startswith("error rate")
    (comparison,) = body["comparisons"]  # type: ignore[misc]
    assert comparison["test"] == "two_proportion_z" and comparison["significant"] and comparison["p_value"] < 1e-6
    assert comparison["verdict"].startswith("b is significantly worse than a on success rate")
    assert body["probability_best"]["a"] > 0.99  # type: ignore[index]


def test_identical_variants_are_not_significant(client: tuple[TestClient, str]) -> None:
    c, db_url = client
    rng = random.Random(11)  # a fixed seed: identical variants land on p = 0.05 one time in twenty
    records = outcomes("fast", "a", 400, error_rate=0.0, latency=300, rng=rng) + outcomes("fast", "b", 400, error_rate=0.0,
                                                                                        latency=300, rng=rng)  # fmt: skip
    OutcomeStore(make_engine(db_url)).apply([(f"1-{i}", r) for i, r in enumerate(records)])
    (comparison,) = results(c, "speed")["comparisons"]  # type: ignore[misc]
    assert comparison["test"] == "welch_t" and not comparison["significant"], comparison
    assert comparison["verdict"].startswith("No significant difference in latency")
    missing = c.get("/api/v1/experiments/nope/results", headers=ADMIN)
    assert missing.status_code == 404 and "'nope' does not exist" in missing.json()["detail"]


def test_overlap_is_refused_guardrails_stop_and_promote_writes_one_revision(client: tuple[TestClient, str]) -> None:
    c, db_url = client
    second = experiment("rates-2", "chat", "latency")
    overlap = c.post("/api/v1/config:apply", json={"objects": [second]}, headers=ADMIN)
    assert overlap.status_code == 422 and "route 'chat' already runs experiment 'rates'" in overlap.text

    rng = random.Random(8)
    records = outcomes("chat", "a", 300, error_rate=0.05, latency=400, rng=rng) + outcomes("chat", "b", 300, error_rate=0.4,
                                                                                         latency=400, rng=rng)  # fmt: skip
    OutcomeStore(make_engine(db_url)).apply([(f"1-{i}", r) for i, r in enumerate(records)])
    results(c, "rates")
    control = c.app.state.runtime.experiment_control  # type: ignore[attr-defined]
    stopped = c.portal.call(control.enforce_guardrails)  # type: ignore[union-attr]
    assert len(stopped) == 1 and stopped[0].startswith("rates (guardrail: b: error rate")
    state = c.get("/api/v1/config/experiments/rates", headers=ADMIN).json()["spec"]["state"]
    assert state == "stopped"
    history = c.get("/api/v1/config/experiments/rates/history", headers=ADMIN).json()
    assert "guardrail" in str(history) and "monitor" in str(history)
    view_until(c, lambda exp: exp.spec.state.value == "stopped")
    again = c.post("/api/v1/experiments/rates/stop", headers=ADMIN)
    assert again.status_code == 400 and "is stopped, not running" in again.json()["detail"]

    unknown = c.post("/api/v1/experiments/speed/promote", json={"variant": "c"}, headers=ADMIN)
    assert unknown.status_code == 400 and "has no variant 'c'; its variants: a, b" in unknown.json()["detail"]
    before = c.get("/api/v1/status", headers=ADMIN).json()["revision"]
    promoted = c.post("/api/v1/experiments/speed/promote", json={"variant": "b"}, headers=ADMIN)
    assert promoted.status_code == 200 and promoted.json()["revision"] > before
    route = c.get("/api/v1/config/routes/fast", headers=ADMIN).json()
    assert route["spec"]["targets"] == [{"model": "big", "weight": 1}] and route["spec"].get("experiment") is None
    assert route["metadata"]["revision"] == promoted.json()["revision"]
    speed = c.get("/api/v1/config/experiments/speed", headers=ADMIN).json()
    assert speed["spec"]["state"] == "completed" and speed["metadata"]["revision"] == promoted.json()["revision"]  # one revision


def test_bandit_moves_traffic_to_the_better_variant_within_bounds(client: tuple[TestClient, str]) -> None:
    from controlplane.services.experiments import bandit_shares

    assert bandit_shares([0.999, 0.001], 0.05) == pytest.approx([0.95, 0.05])
    assert bandit_shares([0.98, 0.01, 0.01], 0.1) == pytest.approx([0.8, 0.1, 0.1])
    c, db_url = client
    bandit = experiment("rates", "chat", "success_rate")
    bandit["spec"]["bandit"] = {"enabled": True, "min_weight": 0.1}  # type: ignore[index]
    assert c.post("/api/v1/config:apply", json={"objects": [bandit]}, headers=ADMIN).status_code == 200
    control = c.app.state.runtime.experiment_control  # type: ignore[attr-defined]
    rng = random.Random(12)
    few = outcomes("chat", "a", 50, error_rate=0.3, latency=300, rng=rng) + outcomes("chat", "b", 50, error_rate=0.02,
                                                                                    latency=300, rng=rng)  # fmt: skip
    OutcomeStore(make_engine(db_url)).apply([(f"1-{i}", r) for i, r in enumerate(few)])
    view_until(c, lambda exp: exp.spec.bandit.enabled)
    assert c.portal.call(control.rebalance) == []  # type: ignore[union-attr]  # under min_samples per variant: no move
    more = outcomes("chat", "a", 100, error_rate=0.3, latency=300, rng=rng) + outcomes("chat", "b", 100, error_rate=0.02,
                                                                                      latency=300, rng=rng)  # fmt: skip
    OutcomeStore(make_engine(db_url)).apply([(f"2-{i}", r) for i, r in enumerate(more)])
    moved = c.portal.call(control.rebalance)  # type: ignore[union-attr]
    assert len(moved) == 1 and "bandit: a 10%, b 90%" in moved[0]
    stored = c.get("/api/v1/config/experiments/rates", headers=ADMIN).json()["spec"]["variants"]
    weights = {v["name"]: v["weight"] for v in stored}
    assert weights == {"a": 100, "b": 900}
    view_until(c, lambda exp: exp.spec.variants[0].weight == 100)  # the control plane's view follows the write
    assert c.portal.call(control.rebalance) == []  # type: ignore[union-attr]  # nothing moved 5 points: no revision


def test_live_updates_stream_summary_and_experiment_events(client: tuple[TestClient, str]) -> None:
    import json

    c, db_url = client
    rng = random.Random(13)
    OutcomeStore(make_engine(db_url)).apply([(f"1-{i}", r) for i, r in enumerate(outcomes("chat", "a", 20, error_rate=0.1,
                                                                                        latency=200, rng=rng))])  # fmt: skip
    results(c, "rates")
    events: list[tuple[str, dict[str, object]]] = []
    params = {"window": "5m", "every_s": 1, "experiment": "rates"}
    with c.stream("GET", "/api/v1/metrics/stream", params=params, headers=ADMIN) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if len(events) == 4:
                    break
    assert [e[0] for e in events] == ["summary", "experiment", "summary", "experiment"]
    assert events[0][1]["fleet"]["requests"] == 20  # type: ignore[index]
    assert events[1][1]["variants"][0]["requests"] == 20  # type: ignore[index]
    assert c.get("/api/v1/metrics/stream", params={"experiment": "nope"}, headers=ADMIN).status_code == 404
    assert c.get("/api/v1/metrics/stream", params={"window": "9d"}, headers=ADMIN).status_code == 400
    fast = c.get("/api/v1/metrics/stream", params={"every_s": 0.2}, headers=ADMIN)
    assert fast.status_code == 422 and "every_s" in fast.text  # one client cannot make the server recompute 5 times a second
    figures = c.app.state.runtime.figures  # type: ignore[attr-defined]
    figures.streams = figures.max_streams  # every slot taken
    full = c.get("/api/v1/metrics/stream", headers=ADMIN)
    assert full.status_code == 503 and "live metrics streams are open" in full.json()["detail"]
    figures.streams = 0
