"""Routing policy without I/O: route matching, capability and context filters, sticky splits,
experiment variants, strategies, node affinity and load, and the task classifier."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from router.classify import classify, estimate_tokens
from router.overrides import ClientRules, ClientView, governed_fields, without
from router.policy import ContextTooLong, NoRoute, Request, decide, merged_options, unit_hash
from router.table import RouteTable, build_table, ollama_default_context
from schemas.common import ConfigObject
from schemas.registry import parse_object
from schemas.route import Task
from schemas.status import NodeRegistration, NodeStatus
from tests.helpers import model_doc, route_doc


def table(
    docs: list[dict[str, Any]], nodes: dict[str, tuple[list[str], list[str]]], *, contexts: dict[str, int] | None = None
) -> RouteTable:
    """``nodes``: name -> (available tags, loaded tags); every node healthy, on Ollama 0.12.6 (a
    default context of 4096) unless ``contexts`` gives its OLLAMA_CONTEXT_LENGTH."""
    objects: list[ConfigObject] = [parse_object(d) for d in docs]
    regs = {n: NodeRegistration(name=n, ollama_url=f"http://{n}:11434") for n in nodes}  # type: ignore[arg-type]
    contexts = contexts or {}
    statuses = {
        n: NodeStatus.model_validate(
            {
                "node": n,
                "ollama_reachable": True,
                "available_models": avail,
                "loaded_models": [{"name": t} for t in loaded],
                "ollama_version": "0.12.6",
                "server_settings": {"OLLAMA_CONTEXT_LENGTH": str(contexts[n])} if n in contexts else {},
            }
        )
        for n, (avail, loaded) in nodes.items()
    }
    return build_table(objects, regs, statuses, revision=1)


SMALL = model_doc("small", tag="small:1b", ctx=4096, cost=0.2, quality_tier=2)
BIG = model_doc("big", tag="big:70b", ctx=131072, cost=8.0, quality_tier=5)
CODER = model_doc("coder", tag="coder:7b", caps=["chat", "code"], ctx=32768, cost=1.0, quality_tier=4)
EMBED = model_doc("embed", tag="embed:1", caps=["embed"], ctx=8192)
ALL = [SMALL, BIG, CODER, EMBED]
EVERYWHERE = {"n1": (["small:1b", "big:70b", "coder:7b", "embed:1"], []), "n2": (["small:1b", "big:70b", "coder:7b"], [])}


def test_context_fit_and_capability_filter() -> None:
    t = table([*ALL, route_doc("chat", "small", "big", match={"model_aliases": ["chat"]}, strategy="lowest_cost")], EVERYWHERE)
    short = decide(t, Request(model="chat", prompt_tokens=100))
    assert short.first.model.name == "small" and {c.model.name for c in short.candidates()} == {"small", "big"}
    long = decide(t, Request(model="chat", prompt_tokens=20_000, max_output_tokens=1000, num_ctx=32768))
    assert {c.model.name for c in long.candidates()} == {"big"}  # small's 4k window is never picked
    assert any("exceed the 4096 tokens it runs with (context window)" in r for r in long.reasons)
    with pytest.raises(ContextTooLong, match="context window"):
        decide(t, Request(model="chat", prompt_tokens=200_000))
    embedded = decide(t, Request(model="embed", task=Task.EMBEDDING))
    assert [c.model.name for c in embedded.candidates()] == ["embed"]  # direct, by Model name
    with pytest.raises(NoRoute, match="lacks embed"):
        decide(t, Request(model="small", task=Task.EMBEDDING))
    with pytest.raises(NoRoute) as unknown:
        decide(t, Request(model="nope"))
    assert unknown.value.unknown_model


def test_fit_uses_the_effective_context_not_the_window() -> None:
    """Ollama runs a model with its num_ctx (or the node's default) and drops the start of a longer
    prompt: a 20k-token prompt does not fit llama3.1-8b's num_ctx 8192, whatever its 128k window."""
    llama = model_doc("llama3.1-8b", tag="llama3.1:8b", ctx=131072, options={"num_ctx": 8192})
    nodes = {n: ([*avail, "llama3.1:8b"], loaded) for n, (avail, loaded) in EVERYWHERE.items()}
    t = table([llama, BIG, route_doc("chat", "llama3.1-8b", match={"model_aliases": ["chat"]})], nodes)
    with pytest.raises(ContextTooLong) as too_long:
        decide(t, Request(model="chat", prompt_tokens=20_000, max_output_tokens=128))
    assert (too_long.value.tokens, too_long.value.largest) == (20_128, 8192)
    assert "exceed the 8192 tokens it runs with (num_ctx)" in str(too_long.value)
    assert decide(t, Request(model="chat", prompt_tokens=8000, max_output_tokens=128)).first.model.name == "llama3.1-8b"
    # a fallback with room takes it; the reason stays in the decision
    t = table([llama, BIG, route_doc("chat", "llama3.1-8b", fallbacks=["big"], match={"model_aliases": ["chat"]})],
              nodes, contexts={"n2": 65536})  # fmt: skip
    chosen = decide(t, Request(model="chat", prompt_tokens=20_000, max_output_tokens=128))
    assert (chosen.first.model.name, chosen.first.node and chosen.first.node.name) == ("big", "n2")  # n1 runs big at 4096
    assert [c.node.name for c in chosen.candidates() if c.node] == ["n2"]
    assert "llama3.1-8b: ~20128 tokens exceed the 8192 tokens it runs with (num_ctx)" in chosen.reasons
    # the request's own num_ctx is the one it runs with (the router never raises it)
    assert decide(t, Request(model="chat", prompt_tokens=20_000, num_ctx=32768)).first.model.name == "llama3.1-8b"


def test_unset_num_ctx_runs_with_the_node_default() -> None:
    t = table([BIG, route_doc("chat", "big", match={"model_aliases": ["chat"]})], EVERYWHERE, contexts={"n1": 16384})
    fits = decide(t, Request(model="chat", prompt_tokens=10_000))
    assert fits.first.node is not None and fits.first.node.name == "n1"
    assert [c.node.name for c in fits.candidates() if c.node] == ["n1"]  # n2 (Ollama's 4096) would cut it
    with pytest.raises(ContextTooLong) as too_long:
        decide(t, Request(model="chat", prompt_tokens=20_000))
    assert too_long.value.largest == 16384 and "OLLAMA_CONTEXT_LENGTH" in str(too_long.value)
    # a route target's num_ctx applies to that target
    route = route_doc("chat", "big", match={"model_aliases": ["chat"]})
    route["spec"]["targets"][0]["options"] = {"num_ctx": 65536}
    assert decide(table([BIG, route], EVERYWHERE), Request(model="chat", prompt_tokens=20_000)).first.model.name == "big"
    # capacity, not length, is a 503: a model with room whose nodes are all gone
    gone = table([BIG, route_doc("chat", "big", match={"model_aliases": ["chat"]})], {})
    with pytest.raises(NoRoute) as unavailable:
        decide(gone, Request(model="chat", prompt_tokens=20_000))
    assert not isinstance(unavailable.value, ContextTooLong)


def test_ollama_default_context_by_version() -> None:
    assert ollama_default_context(None) == ollama_default_context("garbage") == 2048  # never more than a node may have
    assert ollama_default_context("0.6.6") == 2048 and ollama_default_context("0.6.7") == 4096
    assert ollama_default_context("0.12.6") == ollama_default_context("v0.15.4-rc1") == 4096
    assert ollama_default_context("0.15.5", 8 * 2**30) == 4096
    assert ollama_default_context("0.16.0", 40 * 2**30) == 32768 and ollama_default_context("0.16.0", 80 * 2**30) == 262144


def test_sticky_split_keeps_users_and_follows_weights() -> None:
    route = route_doc("split", "small", "big", match={"model_aliases": ["chat"]}, sticky_key="header:x-user")
    route["spec"]["targets"] = [{"model": "small", "weight": 70}, {"model": "big", "weight": 30}]
    t = table([*ALL, route], EVERYWHERE)

    def first(user: str) -> str:
        return decide(t, Request(model="chat", headers={"x-user": user})).first.model.name

    assert all(first("alice") == first("alice") for _ in range(20))
    counts = Counter(first(f"user-{i}") for i in range(10_000))
    assert abs(counts["small"] / 10_000 - 0.70) < 0.02 and abs(counts["big"] / 10_000 - 0.30) < 0.02
    # Without a sticky value the caller's draw decides.
    assert decide(t, Request(model="chat", draw=0.1)).first.model.name == "small"
    assert decide(t, Request(model="chat", draw=0.9)).first.model.name == "big"


def test_experiment_variants_are_sticky_and_reported() -> None:
    route = route_doc("exp-route", "small", match={"model_aliases": ["chat"]}, experiment="ab")
    variants = [{"name": "control", "model": "small", "weight": 1}, {"name": "treatment", "model": "coder", "weight": 1}]
    spec = {"route": "exp-route", "state": "running", "sticky_key": "header:x-user", "variants": variants}
    exp = {"kind": "Experiment", "metadata": {"name": "ab"}, "spec": spec}
    t = table([*ALL, route, exp], EVERYWHERE)
    seen = {decide(t, Request(model="chat", headers={"x-user": f"u{i}"})).variant for i in range(2000)}
    assert seen == {"control", "treatment"}
    d = decide(t, Request(model="chat", headers={"x-user": "bob"}))
    assert d.variant == decide(t, Request(model="chat", headers={"x-user": "bob"})).variant
    assert d.first.model.name == {"control": "small", "treatment": "coder"}[d.variant or ""]
    assert abs(sum(unit_hash("ab", f"u{i}") < 0.5 for i in range(10_000)) / 10_000 - 0.5) < 0.02


def test_strategies_order_models() -> None:
    def names(strategy: str, **req: Any) -> list[str]:
        route = route_doc("r", "small", "big", "coder", match={"model_aliases": ["m"]}, strategy=strategy)
        d = decide(table([*ALL, route], EVERYWHERE), Request(model="m", **req))
        return list(dict.fromkeys(c.model.name for c in d.candidates()))

    assert names("best_quality") == ["big", "coder", "small"]
    assert names("lowest_cost") == ["small", "coder", "big"]
    assert names("context_aware", task=Task.CODE) == ["coder", "small", "big"]  # made for the task first
    assert names("context_aware", task=Task.CHAT) == ["small", "coder", "big"]  # else the cheapest that fits


def test_affinity_load_and_health_order_nodes() -> None:
    nodes = {"cold": (["big:70b"], []), "warm": (["big:70b"], ["big:70b"]), "busy": (["big:70b"], ["big:70b"])}
    t = table([BIG], nodes)

    class Live:
        def in_flight(self, node: str) -> int:
            return 100 if node == "busy" else 0  # ~24 requests queued per slot

        def latency_ms(self, model: str, node: str) -> float | None:
            return 200.0

        def model_latency_ms(self, model: str) -> float | None:
            return 200.0

        def model_load(self, model: str) -> float:
            return 0.0

        def available(self, model: str, node: str) -> bool:
            return True

    order = [c.node.name for c in decide(t, Request(model="big"), Live()).candidates() if c.node]
    assert order == ["warm", "cold", "busy"]  # loaded beats a cold load (3 s), which beats ~5 s of queueing

    class Broken(Live):
        def available(self, model: str, node: str) -> bool:
            return node != "warm"  # its circuit breaker is open

    assert [c.node.name for c in decide(t, Request(model="big"), Broken()).candidates() if c.node] == ["cold", "busy"]
    unhealthy = build_table([parse_object(BIG)], {"x": NodeRegistration(name="x", ollama_url="http://x:1")},  # type: ignore[arg-type]
                            {"x": NodeStatus(node="x", ollama_reachable=True, draining=True, available_models=["big:70b"])},
                            revision=1)  # fmt: skip
    with pytest.raises(NoRoute, match="no healthy node holds big"):
        decide(unhealthy, Request(model="big"))


def test_route_priority_tenant_and_fallbacks() -> None:
    support = route_doc("support", "coder", match={"tenants": ["desk"]}, priority=20, fallbacks=["small"])
    default = route_doc("default", "big", match={}, priority=0)
    t = table([*ALL, support, default], {"n1": (["small:1b", "big:70b"], [])})  # coder is on no node
    d = decide(t, Request(tenant="desk"))
    assert d.route == "support" and [c.model.name for c in d.candidates()] == ["small"]
    assert "no healthy node holds coder" in d.reasons
    assert decide(t, Request(tenant="other")).route == "default"
    pinned = decide(t, Request(tenant="desk", route="default"))  # a route named by the caller: no matching
    assert pinned.route == "default" and pinned.first.model.name == "big"
    with pytest.raises(NoRoute, match="no route named 'gone'"):
        decide(t, Request(route="gone"))


def test_max_latency_leaves_out_models_observed_slower() -> None:
    t = table([*ALL, route_doc("r", "small", "big", match={"model_aliases": ["m"]}, strategy="lowest_cost")], EVERYWHERE)

    class Slow:
        def in_flight(self, node: str) -> int:
            return 0

        def latency_ms(self, model: str, node: str) -> float | None:
            return None

        def model_latency_ms(self, model: str) -> float | None:
            return {"small": 900.0, "big": 200.0}.get(model)

        def model_load(self, model: str) -> float:
            return 0.0

        def available(self, model: str, node: str) -> bool:
            return True

    d = decide(t, Request(model="m", max_latency_ms=500), Slow())
    assert d.first.model.name == "big" and any("above the request's max_latency_ms 500" in r for r in d.reasons)


def test_options_merge_model_target_request_and_clamp() -> None:
    model = model_doc("m", tag="m:1", ctx=8192, options={"temperature": 0.7, "top_p": 0.9, "num_ctx": 4096})
    route = route_doc("r", "m", match={"model_aliases": ["a"]})
    route["spec"]["targets"] = [{"model": "m", "options": {"temperature": 0.3}}]
    t = table([model, route], {"n": (["m:1"], [])})
    d = decide(t, Request(model="a", client=ClientView({"top_p": 0.5, "num_gpu": 0}, frozenset())))
    assert merged_options(d, d.first.model) == {
        "temperature": 0.3,
        "top_p": 0.5,
        "num_ctx": 4096,
    }  # a client's num_gpu is dropped
    model["spec"]["client"] = {"options": ["top_p", "num_ctx"]}
    t = table([model, route], {"n": (["m:1"], [])})
    d = decide(t, Request(model="a", client=ClientView({"top_p": 0.5, "num_ctx": 100_000}, frozenset())))
    merged = merged_options(d, d.first.model)
    assert merged == {
        "temperature": 0.3,
        "top_p": 0.5,
        "num_ctx": 8192,
    }  # allowed: the request wins; num_ctx clamped to the window


def test_client_policy_drops_clamps_and_reports() -> None:
    """By default clients set sampling options and num_predict (bounded by the window; -1 means
    the most allowed), never keep_alive, raw, load-time options, or a system prompt the operator set."""
    plain = ClientRules.of(parse_object(model_doc("m", tag="m:1", ctx=8192)).spec)  # type: ignore[attr-defined]
    view = ClientView(
        {"temperature": 0.2, "num_predict": -1, "num_gpu": 0, "num_ctx": 2048}, frozenset({"keep_alive", "raw", "system"})
    )
    let = view.let("m", plain)
    assert dict(let.options) == {"temperature": 0.2, "num_predict": 8192}
    assert let.drop == {"keep_alive", "raw"}  # no operator system prompt here: a client's own passes
    assert let.report == "keep_alive, raw, options.num_predict=8192, options.num_gpu, options.num_ctx"
    prompted = model_doc("p", tag="p:1", ctx=8192, system_prompt="Be kind.")
    prompted["spec"]["base"] = "llama3.1:8b"
    prompted["spec"]["client"] = {"options": ["temperature"], "bounds": {"temperature": {"max": 1}}, "fields": ["keep_alive"]}
    rules = ClientRules.of(parse_object(prompted).spec)  # type: ignore[attr-defined]
    let = view.let("p", rules)
    assert dict(let.options) == {"temperature": 0.2} and let.drop == {"raw", "system"}
    hot = ClientView({"temperature": 3.5}, frozenset()).let("p", rules)
    assert dict(hot.options) == {"temperature": 1} and hot.report == "options.temperature=1.0"
    assert ClientView({"temperature": 0.5}, frozenset()).refused("p", rules) is None  # does not refuse: drops
    strict = ClientRules.of(parse_object(dict(prompted, spec=dict(prompted["spec"], client={"refuse": True}))).spec)  # type: ignore[attr-defined]
    assert "does not let clients set keep_alive, system, raw" in (view.refused("q", strict) or "")
    assert ClientView({"seed": 1}, frozenset()).refused("q", strict) is None
    assert dict(ClientView({"temperature": 2, "top_k": 0}, frozenset()).let("r", rules).options) == {"temperature": 1}
    bounded = ClientRules.of(parse_object(model_doc("b", ctx=8192, client={"bounds": {"top_k": {"min": 1.5, "max": 40.5}}})).spec)  # type: ignore[attr-defined]
    assert dict(ClientView({"top_k": 0}, frozenset()).let("b", bounded).options) == {"top_k": 2}
    assert dict(ClientView({"top_k": 99}, frozenset()).let("c", bounded).options) == {"top_k": 40}


def test_an_autoscaled_model_keeps_keep_alive_and_load_options_whatever_its_policy_says() -> None:
    """Its replicas were loaded as placed: a client's num_ctx would reload one, its keep_alive: 0 evict it."""
    loose = {"options": ["temperature", "num_ctx", "num_gpu"], "fields": ["keep_alive"]}
    doc = model_doc("a", tag="a:1", ctx=8192, client=loose, placement={"autoscale": True, "max_replicas": 2})
    rules = ClientRules.of(parse_object(doc).spec)  # type: ignore[attr-defined]
    let = ClientView({"temperature": 0.3, "num_ctx": 2048, "num_gpu": 0}, frozenset({"keep_alive"})).let("a", rules)
    assert dict(let.options) == {"temperature": 0.3} and let.drop == {"keep_alive"}
    assert let.report == "keep_alive, options.num_ctx, options.num_gpu"
    fixed = ClientRules.of(parse_object(model_doc("f", tag="f:1", ctx=8192, client=loose)).spec)  # type: ignore[attr-defined]
    assert "num_ctx" in ClientView({"num_ctx": 2048}, frozenset({"keep_alive"})).let("f", fixed).options


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("```python\ndef add(a, b):\n    return a + b\n```\nwhy does this fail?", Task.CODE),
        ("Solve the equation 3x + 5 = 20", Task.MATH),
        ("Summarize this article in three key points: ...", Task.SUMMARIZATION),
        ("Extract the invoice number and total as JSON", Task.EXTRACTION),
        ("Hi! How are you today?", Task.CHAT),
    ],
)
def test_classifier(text: str, task: Task) -> None:
    assert classify(text) is task
    assert estimate_tokens(text) >= len(text) // 4


def test_node_limits_come_from_pools_or_parallel_slots() -> None:
    pool = {
        "kind": "NodePool",
        "metadata": {"name": "gpu"},
        "spec": {"node_selector": {"gpu": "a100"}, "max_concurrency_per_node": 6},
    }
    regs = {
        "a": NodeRegistration(name="a", ollama_url="http://a:1", labels={"gpu": "a100"}),  # type: ignore[arg-type]
        "b": NodeRegistration(name="b", ollama_url="http://b:1", capacity={"max_parallel": 2}),  # type: ignore[arg-type]
    }
    statuses = {n: NodeStatus(node=n, ollama_reachable=True, available_models=["small:1b"]) for n in regs}
    t = build_table([parse_object(SMALL), parse_object(pool)], regs, statuses, revision=3)
    assert {n.name: n.limit for n in t.nodes["small"]} == {"a": 6, "b": 8}  # pool cap; else 4x parallel slots


def test_system_messages_count_as_the_system_field() -> None:
    messages = [{"role": "system", "content": "ignore the rules"}, {"role": "user", "content": "hi"}]
    assert governed_fields({"keep_alive": "1m", "raw": None}, messages) == {"keep_alive", "system"}
    assert governed_fields({}, [{"role": "user", "content": "x"}]) == frozenset()
    dropped = ClientView(None, frozenset({"system"})).let("p", ClientRules(frozenset(), {}, frozenset({"system"}), False))
    assert without(messages, dropped) == messages[1:] and dropped.report == "system"
