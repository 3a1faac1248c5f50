"""The quality strategy without I/O: request classes, the posterior's arithmetic, Thompson
sampling with exploration, cost weight and the floor, the decision it records, and the learned
task classifier (hashing, scoring, loading, refusal of a bad object)."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pydantic
import pytest

from router.bandit import Arm, choose
from router.core import route_headers
from router.learned import LinearClassifier, features, load, read_samples, train
from router.native_api import explain
from router.policy import Request, decide
from router.table import RouteTable, build_table
from schemas.classifier import Classifier
from schemas.quality import ClassQuality, Evidence, ModelQuality, RouteQuality, class_key, length_bucket
from schemas.registry import parse_object
from schemas.route import Task
from tests.helpers import model_doc, route_doc

A = model_doc("a", tag="a:1", ctx=32768, caps=["chat", "code"])
B = model_doc("b", tag="b:1", ctx=32768, caps=["chat", "code"])
PROMPTS = "deploy/examples/classifier/prompts.jsonl"
UNIT = SimpleNamespace(cost=1.0)


def quality_route(**quality: Any) -> dict[str, Any]:
    return route_doc("q", "a", "b", match={"model_aliases": ["q"]}, strategy="quality", quality=quality)


def published(arms: dict[str, dict[str, Evidence]], *, excluded: frozenset[tuple[str, str]] = frozenset()) -> RouteQuality:
    classes = [
        ClassQuality(name=cls, models=[
            ModelQuality(model=m, evidence=ev, mean=ev.mean(), low=0, high=1, share=0.5, excluded=(cls, m) in excluded)
            for m, ev in models.items()
        ]) for cls, models in arms.items()
    ]  # fmt: skip
    return RouteQuality(route="q", updated_at=0.0, classes=classes)


def with_quality(docs: list[dict[str, Any]], q: RouteQuality) -> RouteTable:
    return build_table([parse_object(d) for d in docs], *_fleet(), revision=2, quality={"q": q})


def _fleet() -> tuple[dict[str, Any], dict[str, Any]]:
    from schemas.status import NodeRegistration, NodeStatus

    regs = {"n1": NodeRegistration(name="n1", ollama_url="http://n1:11434")}  # type: ignore[arg-type]
    status = NodeStatus.model_validate({
        "node": "n1", "ollama_reachable": True, "available_models": ["a:1", "b:1"],
        "loaded_models": [{"name": "a:1"}, {"name": "b:1"}], "ollama_version": "0.12.6",
    })  # fmt: skip
    return regs, {"n1": status}


GOOD = Evidence(successes=60, failures=2, scores=40, score_sum=36, score_sq=32.8)
BAD = Evidence(successes=60, failures=2, scores=40, score_sum=10, score_sq=3.0)


def test_classes_are_task_length_and_optionally_tenant() -> None:
    assert [length_bucket(n) for n in (1, 256, 257, 2048, 2049)] == ["short", "short", "medium", "medium", "long"]
    assert class_key("code", 10) == "code/short" and class_key("chat", 5000, "acme") == "chat/long/acme"


def test_posterior_mean_interval_and_prior() -> None:
    prior = Evidence()
    assert prior.mean() == pytest.approx(0.25)  # success 1/2 x score 1/2
    assert GOOD.mean() > 0.8 and BAD.mean() < 0.3
    low, high = GOOD.interval()
    assert low < GOOD.mean() < high and high - low < 0.2
    assert Evidence(successes=1, failures=0).interval() != Evidence(successes=100, failures=0).interval()


def test_thompson_sends_each_class_to_its_better_model_and_still_explores() -> None:
    arms = {"code/short": {"a": Arm.of(GOOD), "b": Arm.of(BAD)}, "chat/short": {"a": Arm.of(BAD), "b": Arm.of(GOOD)}}
    rng = random.Random(1)
    for cls, best in (("code/short", "a"), ("chat/short", "b")):
        firsts = Counter(choose(cls, ["a", "b"], arms, cost=lambda _: UNIT, explore=0.05, cost_weight=0, rng=rng)[0][0]
                         for _ in range(2000))  # fmt: skip
        assert firsts[best] / 2000 > 0.9
        assert firsts[best] / 2000 < 0.99  # the exploration floor: the other gets ~5%
    unknown = Counter(choose("math/long", ["a", "b"], arms, cost=lambda _: UNIT, explore=0.0, cost_weight=0, rng=rng)[0][0]
                      for _ in range(2000))  # fmt: skip
    assert 0.4 < unknown["a"] / 2000 < 0.6  # no evidence: both are tried alike


def test_cost_weight_trades_quality_for_price() -> None:
    near = {"c": {"a": Arm.of(GOOD), "b": Arm.of(Evidence(successes=60, failures=4, scores=40, score_sum=33, score_sq=28))}}
    rng = random.Random(2)
    costs = {"a": SimpleNamespace(cost=10.0), "b": UNIT}.__getitem__
    plain = Counter(choose("c", ["a", "b"], near, cost=costs, explore=0, cost_weight=0, rng=rng)[0][0] for _ in range(1000))
    priced = Counter(choose("c", ["a", "b"], near, cost=costs, explore=0, cost_weight=1, rng=rng)[0][0] for _ in range(1000))
    assert plain["a"] > 600 and priced["b"] > 950


def test_a_model_below_the_floor_is_not_chosen_but_stays_a_last_fallback() -> None:
    arms = {"c": {"a": Arm.of(BAD, excluded=True), "b": Arm.of(Evidence())}}
    order, choice = choose("c", ["a", "b"], arms, cost=lambda _: UNIT, explore=0.5, cost_weight=0, rng=random.Random(0))
    assert order == ["b", "a"] and choice.why == "only"
    everyone = {"c": {"a": Arm.of(BAD, excluded=True), "b": Arm.of(BAD, excluded=True)}}
    order, choice = choose("c", ["a", "b"], everyone, cost=lambda _: UNIT, explore=0, cost_weight=0, rng=random.Random(0))
    assert set(order) == {"a", "b"} and choice.why == "floor"


def test_decision_names_class_scores_and_why_in_headers_and_dry_run() -> None:
    q = published({"code/short": {"a": GOOD, "b": BAD}})
    t = with_quality([A, B, quality_route(explore=0.0)], q)
    d = decide(t, Request(model="q", text="def parse(rows): ...  fix this python bug", prompt_tokens=20, rng=random.Random(3)))
    assert d.first.model.name == "a" and d.strategy == "quality"
    assert d.choice is not None and d.choice.cls == "code/short" and d.choice.why == "thompson"
    headers = route_headers(d, d.first, 1, "r1", 12.0)
    assert headers["x-route-class"] == "code/short" and headers["x-route-why"] == "thompson"
    assert set(dict(kv.split("=") for kv in headers["x-route-scores"].split(","))) == {"a", "b"}
    shown = explain(d, 12.0)["quality"]
    assert shown["class"] == "code/short" and set(shown["scores"]) == {"a", "b"}
    tenant = with_quality([A, B, quality_route(by_tenant=True)], q)
    d = decide(tenant, Request(model="q", text="hello", tenant="acme", prompt_tokens=3000))
    assert d.choice is not None and d.choice.cls == "chat/long/acme"


def test_a_stopped_strategy_serves_the_static_weights() -> None:
    q = published({"chat/short": {"a": BAD, "b": GOOD}})
    route = route_doc("q", "a", "b", match={"model_aliases": ["q"]}, strategy="quality", quality={"enabled": False})
    route["spec"]["targets"] = [{"model": "a", "weight": 1}, {"model": "b", "weight": 0}]
    t = with_quality([A, B, route], q)
    d = decide(t, Request(model="q", text="hello", draw=0.5))
    assert d.first.model.name == "a" and d.choice is None and d.strategy == "weighted"
    assert "x-route-class" not in route_headers(d, d.first, 1, "r", 1.0)


def test_the_quality_strategy_skips_models_that_do_not_fit() -> None:
    small = model_doc("a", tag="a:1", ctx=2048, caps=["chat", "code"])
    q = published({"chat/medium": {"a": GOOD, "b": BAD}})
    t = with_quality([small, B, quality_route(explore=0.0)], q)
    d = decide(t, Request(model="q", text="hello " * 400, prompt_tokens=1500, max_output_tokens=800))
    assert d.first.model.name == "b" and d.choice is not None and d.choice.why == "only"


# -- the learned classifier -----------------------------------------------------------------------


def test_features_are_stable_across_processes_and_hash_seeds() -> None:
    text = "Write a Python function that parses a CSV file."
    mine = sorted(int(i) for i in features(text, 13))
    code = f"from router.learned import features; print(sorted(int(i) for i in features({text!r}, 13)))"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout  # fmt: skip
        assert out.strip() == str(mine)
    assert all(0 <= i < 2**13 for i in mine) and len(mine) == 2 * len(f" {text.lower()} ") - 5
    assert len(features("", 10)) > 0  # an empty prompt still has a feature (of the padding)


def test_trained_classifier_scores_and_round_trips_through_a_classifier_object() -> None:
    with open(PROMPTS, encoding="utf-8") as handle:
        samples = read_samples(handle)
    held, train_on = samples[:60], samples[60:]
    model = train(train_on, bits=12)
    assert sum(model(text) is task for text, task in held) / len(held) > 0.9
    obj = Classifier.model_validate({"kind": "Classifier", "metadata": {"name": "tasks"}, "spec": model.spec().model_dump()})
    again = LinearClassifier.of(obj)
    assert all(again(text) is model(text) for text, _ in held)
    assert model("Solve the equation 3x + 4 = 0.") is Task.MATH


def test_a_route_uses_its_classifier_for_the_class() -> None:
    always_math = LinearClassifier([Task.CHAT, Task.MATH], [[0.0, 0.0]] * 256, [0.0, 1.0], bits=8)
    obj = Classifier.model_validate({"kind": "Classifier", "metadata": {"name": "m", "revision": 5},
                                     "spec": always_math.spec().model_dump()})  # fmt: skip
    route = quality_route(classifier="m")
    objects = [parse_object(d) for d in (A, B, route)] + [obj]
    t = build_table(objects, *_fleet(), revision=3)
    d = decide(t, Request(model="q", text="hello there", prompt_tokens=3))
    assert d.choice is not None and d.choice.cls == "math/short"


def test_a_bad_classifier_object_is_refused_with_a_clear_error() -> None:
    good = LinearClassifier([Task.CHAT, Task.CODE], [[0.0, 0.0]] * 256, [0.0, 0.0], bits=8).spec().model_dump()
    doc = {"kind": "Classifier", "metadata": {"name": "c"}, "spec": good}
    Classifier.model_validate(doc)
    cases = {
        "weights hold 4 bytes": {"weights": base64.b64encode(b"\0" * 4).decode()},
        "not base64": {"weights": "%%%"},
        "bias has 1 values for 2 classes": {"bias": [0.0]},
        "'embedding' is never inferred": {"classes": ["chat", "embedding"]},
        "finite": {"weights": base64.b64encode(b"\x00\x7c" * 512).decode()},  # float16 infinity
    }
    for said, change in cases.items():
        with pytest.raises(pydantic.ValidationError, match=said):
            Classifier.model_validate({**doc, "spec": {**good, **change}})


def test_a_classifier_that_cannot_be_built_leaves_the_rules_in_use(caplog: pytest.LogCaptureFixture) -> None:
    spec = LinearClassifier([Task.CHAT, Task.CODE], [[0.0, 0.0]] * 256, [0.0, 0.0], bits=8).spec()
    broken = Classifier.model_construct(kind="Classifier", metadata=parse_object(A).metadata.model_copy(update={"name": "x"}),
                                        spec=spec.model_copy(update={"bits": 9}))  # fmt: skip
    assert load(broken) is None
    assert "the rules classify instead" in caplog.text
    route = quality_route(classifier="x")
    t = build_table([*(parse_object(d) for d in (A, B, route)), broken], *_fleet(), revision=3)
    d = decide(t, Request(model="q", text="def f(): pass  # python", prompt_tokens=5))
    assert d.choice is not None and d.choice.cls == "code/short"  # the rules read it


def test_the_simulated_judge_scores_by_the_quality_profile() -> None:
    from tests.sim.engine import json_answer, sim_task

    profile = {"coder-a": {"code": 0.9, "*": 0.3}}
    judge = "You grade an assistant's answer. Question:\n{q}\n\nAnswer:\n[{m}] some words"

    def score(question: str, model: str, quality: dict[str, dict[str, float]] | None = profile) -> float:
        import json

        return float(json.loads(json_answer("x", judge.format(q=question, m=model), quality))["score"])

    assert sim_task("Write a python function") == "code" and sim_task("Tell me about the sea") == "chat"
    assert score("Write a python function", "coder-a") == 0.9
    assert score("Tell me about the sea", "coder-a") == 0.3  # '*': any other task
    assert score("Tell me about the sea", "other") == score("Tell me about the sea", "other", None)  # not in the profile
