"""The answers about the fleet: each node's health and what it holds, desired versus actual per
model and node, and what a live tune did on each node. The API's response models, and what llmctl
and the web UI read; fields a newer server adds are ignored by an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import INT_MAX
from schemas.status import Capacity, ModelCondition

NodeHealth = Literal["ready", "not-reporting", "ollama-unreachable", "draining", "degraded"]
ApplyState = Literal["applied", "failed", "pending", "unreachable", "not-reporting"]


class NodeSummary(BaseModel):
    """One node as its registration and live status tell it."""

    node: str
    health: NodeHealth = Field(description="not-reporting: no live status (the agent is down or its lease expired).")
    labels: dict[str, str] = Field(default_factory=dict)
    ollama_url: str | None = Field(default=None, description="None: the node reports status but is not registered.")
    capacity: Capacity | None = None
    agent_version: str = ""
    applied_revision: int | None = Field(default=None, ge=0, le=INT_MAX, description="The configuration revision it applied.")
    lag: int | None = Field(default=None, ge=0, le=INT_MAX, description="Revisions it is behind the configuration.")
    ollama_version: str | None = None
    loaded_models: list[str] = Field(default_factory=list)
    memory_used_bytes: int = Field(default=0, ge=0, le=INT_MAX, description="The loaded models' size (Ollama's /api/ps).")
    vram_used_bytes: int = Field(default=0, ge=0, le=INT_MAX, description="Of which in GPU memory.")
    draining: bool = False
    restart_required: list[str] = Field(default_factory=list)
    last_errors: list[str] = Field(default_factory=list, description="The last three.")
    updated_at: datetime | None = Field(default=None, description="When the agent last wrote its status (its heartbeat).")
    heartbeat_age_s: float | None = Field(default=None, ge=0, description="Seconds since updated_at, at generated time.")


class NodeList(BaseModel):
    revision: int = Field(ge=0, le=INT_MAX, description="The configuration revision the control plane sees.")
    generated_at: datetime
    nodes: list[NodeSummary]


class ModelOnNode(BaseModel):
    """A model on one node that should hold it."""

    node: str
    present: bool = Field(description="Pulled: its tag is among the node's models.")
    loaded: bool = Field(description="In memory (Ollama's /api/ps).")
    ready: bool = Field(description="The agent's condition for it is Ready.")
    applied: bool = Field(description="The node applied the Model's revision.")
    applied_revision: int | None = Field(default=None, ge=0, le=INT_MAX)
    condition: ModelCondition | None = Field(default=None, description="The agent's last condition: Pulling (with progress), …")


class Scaling(BaseModel):
    """The autoscaler's last decision for a model."""

    desired: int = Field(ge=0, le=INT_MAX)
    ready: int = Field(ge=0, le=INT_MAX)
    placed: int = Field(default=0, ge=0, le=INT_MAX)
    reason: str = ""
    panic: bool = False
    short: str = Field(default="", description="Why fewer replicas are placed than wanted.")
    restarting: list[str] = Field(default_factory=list)
    updated_at: datetime | None = None


class ModelStatus(BaseModel):
    model: str
    ollama_tag: str = Field(description="With its tag (':latest' when the Model names none).")
    revision: int = Field(ge=0, le=INT_MAX, description="The Model's own revision.")
    nodes: list[ModelOnNode]
    ready_nodes: int = Field(ge=0, le=INT_MAX, description="Nodes where it is ready at its revision.")
    desired_nodes: int = Field(ge=0, le=INT_MAX, description="Nodes that should hold it (the autoscaler's desired replicas).")
    autoscaled: bool = Field(default=False, description="Its replicas follow load (placement.autoscale).")
    autoscale: Scaling | None = Field(default=None, description="Its autoscaler decision (None: not autoscaled or none yet).")


class ModelsStatus(BaseModel):
    revision: int = Field(ge=0, le=INT_MAX)
    generated_at: datetime
    models: list[ModelStatus]
    nodes: list[NodeSummary]


class NodeApplyState(BaseModel):
    """One model on one node, as far as a change at a revision is concerned."""

    node: str
    model: str
    state: ApplyState
    message: str = ""


class TuneAnswer(BaseModel):
    """What a live tune wrote and, with ``wait=applied``, what each node confirmed."""

    revision: int = Field(ge=0, le=INT_MAX)
    models: list[str] = Field(description="The Models the request selected.")
    changed: bool = Field(description="False when every selected Model already had the patch (nothing was written).")
    waited: bool
    complete: bool = Field(description="Every node holding a tuned model applied the revision (status 200; else 202).")
    elapsed_ms: float = Field(ge=0)
    nodes: list[NodeApplyState]
    not_applied: list[str] = Field(description="Nodes that have not confirmed it.")
