"""The router's load report as the autoscaler reads it (router/load.py): tokens per second from
the counters' differences, the queue's figures, nothing for a model without load."""

from __future__ import annotations

from controlplane.store.keys import KeySpace
from controlplane.store.memory import MemoryStore
from router.admission import QueueFigures
from router.load import LoadReporter


def test_models_in_the_report() -> None:
    now, made = [10.0], {("m", "n1"): 100}
    queue = {"m": QueueFigures(waiting=2, longest_wait_s=0.8, refused=3), "quiet": QueueFigures(0, 0.0, 1)}
    reporter = LoadReporter(
        MemoryStore(), KeySpace("t"), "r", in_flight=dict, draining=list, by_model=lambda: {"m": {"n1": 4}},
        generated=lambda: dict(made), queue=lambda: queue, clock=lambda: now[0],
    )  # fmt: skip
    first = reporter.report().models
    assert first["m"].in_flight == {"n1": 4} and first["m"].tokens_per_s == {}  # no rate before a second reading
    assert (first["m"].queued, first["m"].longest_wait_s, first["m"].refused) == (2, 0.8, 3)
    now[0], made[("m", "n1")], made[("x", "n2")] = 12.0, 150, 10
    second = reporter.report().models
    assert second["m"].tokens_per_s == {"n1": 25.0} and second["x"].tokens_per_s == {"n2": 5.0}
    assert second["quiet"].in_flight == {} and second["quiet"].refused == 1
