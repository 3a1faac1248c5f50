"""Which nodes should hold a model: pure functions over models, node pools and node labels, and
the autoscaler's records.

A model without ``placement.autoscale`` is held by every live node that matches its node
selector (and its node pool's selector). One with it is held where the autoscaler places it
(``/<ns>/v1/placement/<node>``, between ``min_replicas`` and ``max_replicas``), among those nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import Field

from schemas.common import Name, Report
from schemas.model import Model, Provider
from schemas.nodepool import NodePool, ServerSettings


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pools_of(labels: Mapping[str, str], pools: Iterable[NodePool]) -> list[NodePool]:
    """The pools a node with ``labels`` belongs to, by name."""
    return sorted((p for p in pools if matches(p.spec.node_selector, labels)), key=lambda p: p.name)


def placed_on(model: Model, labels: Mapping[str, str], pools: Mapping[str, NodePool]) -> bool:
    """True when a node with ``labels`` should hold ``model`` (Ollama models only)."""
    if model.spec.provider is not Provider.OLLAMA:
        return False
    placement = model.spec.placement
    if not matches(placement.node_selector, labels):
        return False
    if placement.node_pool is None:
        return True
    pool = pools.get(placement.node_pool)
    return pool is not None and matches(pool.spec.node_selector, labels)


def server_settings(labels: Mapping[str, str], pools: Iterable[NodePool]) -> ServerSettings:
    """The start-time settings for a node: its pools' settings merged in name order (later wins)."""
    merged: dict[str, object] = {}
    for pool in pools_of(labels, pools):
        merged.update(pool.spec.server.model_dump(exclude_none=True))
    return ServerSettings.model_validate(merged)


def prunes(labels: Mapping[str, str], pools: Iterable[NodePool]) -> bool:
    """True when a pool of the node says to delete models that no configuration places there."""
    return any(p.spec.prune for p in pools_of(labels, pools))


class NodePlacement(Report):
    """``/<ns>/v1/placement/<node>``: the autoscaled models a node should hold (written by the
    autoscaler's leader, fenced); models without autoscaling are not listed."""

    node: Name
    models: list[Name] = Field(default_factory=list, max_length=1000)
    updated_at: datetime | None = None


class ScalingRecord(Report):
    """``/<ns>/v1/scaling/<model>``: the autoscaler's last decision for a model and the formula's
    windows, so a new leader carries on where the last one was."""

    model: Name
    desired: int = Field(ge=0)
    ready: int = Field(ge=0)
    placed: int = Field(default=0, ge=0)
    reason: str = Field(default="", max_length=2000)
    panic: bool = False
    short: str = Field(default="", max_length=500, description="Why fewer replicas are placed than wanted.")
    restarting: list[Name] = Field(
        default_factory=list, max_length=1000,
        description="Nodes holding it that wait to restart, as this record saw them (each gets one more replica elsewhere).",
    )  # fmt: skip
    windows: dict[str, Any] = Field(default_factory=dict)
    updated_at: datetime | None = None
