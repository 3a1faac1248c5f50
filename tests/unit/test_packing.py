"""Placement (controlplane/services/packing.py): no over-commit, the blob on disk preferred,
replicas spread, a large model still fits after small ones, removals in the right order, and
successive decisions that never book the same memory twice (a hypothesis property)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.services.packing import NodeRoom, Plan, place

GB = 1_000_000_000


def everywhere(models: list[str], nodes: list[NodeRoom]) -> dict[str, frozenset[str]]:
    return {m: frozenset(n.name for n in nodes) for m in models}


def used(plan: Plan, claims: dict[str, int], node: str) -> int:
    return sum(claims[m] for m in plan.placement[node])


def settle(wanted: dict[str, int], claims: dict[str, int], nodes: list[NodeRoom]) -> Plan:
    """Decisions in a row, each after the last one's loads finished (one load per node at a time)."""
    plan = place(wanted, claims, nodes, eligible=everywhere(list(claims), nodes))
    for _ in range(10):
        nodes = [NodeRoom(n.name, n.memory, max_loaded=n.max_loaded, held=plan.placement[n.name]) for n in nodes]
        plan = place(wanted, claims, nodes, eligible=everywhere(list(claims), nodes))
        if not plan.added:
            break
    return plan


def test_a_large_model_still_fits_after_small_ones_and_replicas_spread() -> None:
    nodes = [NodeRoom("a", 16 * GB), NodeRoom("b", 16 * GB)]
    claims = {"big": 12 * GB, "s1": 3 * GB, "s2": 3 * GB, "s3": 3 * GB}
    first = place({"s1": 1, "s2": 1, "s3": 1, "big": 1}, claims, nodes, eligible=everywhere(list(claims), nodes))
    assert first.added == (("big", "b"), ("s1", "a")) and "one load at a time" in first.short["s2"]  # the largest first
    plan = settle({"s1": 1, "s2": 1, "s3": 1, "big": 1}, claims, nodes)
    assert plan.replicas("big") == 1 and not plan.short
    assert all(used(plan, claims, n.name) <= n.memory for n in nodes)
    spread = settle({"s1": 2}, claims, nodes)
    assert spread.placement == {"a": frozenset({"s1"}), "b": frozenset({"s1"})}  # one replica a node


def test_the_node_with_the_blob_wins_and_busy_nodes_lose() -> None:
    nodes = [NodeRoom("a", 24 * GB), NodeRoom("b", 24 * GB, on_disk=frozenset({"m"})), NodeRoom("c", 24 * GB)]
    assert place({"m": 1}, {"m": 5 * GB}, nodes, eligible=everywhere(["m"], nodes)).added == (("m", "b"),)
    busy = [NodeRoom("a", 24 * GB, in_flight=30), NodeRoom("c", 24 * GB)]
    assert place({"m": 1}, {"m": 5 * GB}, busy, eligible=everywhere(["m"], busy)).added == (("m", "c"),)


def test_what_does_not_fit_is_short_with_the_reason() -> None:
    nodes = [NodeRoom("a", 8 * GB, held=frozenset({"x"})), NodeRoom("b", 8 * GB, max_loaded=1, held=frozenset({"y"}))]
    claims = {"x": 4 * GB, "y": 1 * GB, "m": 6 * GB}
    plan = settle({"x": 1, "y": 1, "m": 1}, claims, nodes)
    assert plan.replicas("m") == 0 and "the most any matching node has free is 4.0 GB" in plan.short["m"]
    assert "selector" in place({"m": 1}, claims, nodes, eligible={}).short["m"]


def test_one_load_at_a_time_per_node() -> None:
    nodes = [NodeRoom("a", 64 * GB, held=frozenset({"x"}), loading=True), NodeRoom("b", 64 * GB)]
    plan = place({"x": 1, "y": 1, "z": 1}, {"x": GB, "y": GB, "z": GB}, nodes, eligible=everywhere(["x", "y", "z"], nodes))
    assert plan.added == (("y", "b"),) and set(plan.short) == {"z"}


def test_removals_go_unhealthy_then_not_loaded_then_offloaded_then_idle() -> None:
    nodes = [
        NodeRoom("dead", 16 * GB, held=frozenset({"m"}), healthy=False),
        NodeRoom("busy", 16 * GB, held=frozenset({"m"}), in_flight=5),
        NodeRoom("idle", 16 * GB, held=frozenset({"m"})),
        NodeRoom("cpu", 16 * GB, held=frozenset({"m"}), offloaded=frozenset({"m"}), in_flight=9),
        NodeRoom("new", 16 * GB, held=frozenset({"m"}), ready=frozenset(), loading=True),  # not loaded yet: serves nothing
    ]
    plan = place({"m": 1}, {"m": 4 * GB}, nodes, eligible=everywhere(["m"], nodes))
    assert plan.removed == (("m", "dead"), ("m", "new"), ("m", "cpu"), ("m", "idle")) and plan.placement["busy"] == {"m"}
    gone = place({}, {"m": 4 * GB}, nodes[1:2], eligible={})
    assert gone.removed == (("m", "busy"),) and gone.placement == {"busy": frozenset()}


@settings(max_examples=80, deadline=None)
@given(
    memories=st.lists(st.integers(min_value=2, max_value=48), min_size=1, max_size=6),
    claims=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=6),
    waves=st.lists(st.lists(st.integers(min_value=0, max_value=4), min_size=6, max_size=6), min_size=1, max_size=4),
)
def test_successive_decisions_never_over_commit(memories: list[int], claims: list[int], waves: list[list[int]]) -> None:
    """Each decision starts from the last one's placement (as the loop's does, from the store)."""
    claim = {f"m{i}": c * GB for i, c in enumerate(claims)}
    nodes = [NodeRoom(f"n{i}", m * GB, max_loaded=3) for i, m in enumerate(memories)]
    for wave in waves:
        wanted = {m: wave[i] for i, m in enumerate(claim)}
        plan = place(wanted, claim, nodes, eligible=everywhere(list(claim), nodes))
        for node in nodes:
            assert used(plan, claim, node.name) <= node.memory and len(plan.placement[node.name]) <= node.max_loaded
        for model, count in wanted.items():
            assert plan.replicas(model) <= count and (plan.replicas(model) == count or model in plan.short)
        nodes = [NodeRoom(n.name, n.memory, max_loaded=3, held=plan.placement[n.name]) for n in nodes]
