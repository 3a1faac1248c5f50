"""Node registration and status, written by agents under lease-bound keys (not desired config)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AnyHttpUrl, Field

from schemas.common import INT_MAX, LabelKey, LabelValue, Name, Report


class Capacity(Report):
    memory_bytes: int = Field(default=0, ge=0, le=INT_MAX)
    gpu_memory_bytes: int = Field(default=0, ge=0, le=INT_MAX)
    max_loaded_models: int = Field(default=1, ge=1, le=INT_MAX)
    max_parallel: int = Field(default=4, ge=1, le=INT_MAX)


class NodeRegistration(Report):
    name: Name
    ollama_url: AnyHttpUrl
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    capacity: Capacity = Field(default_factory=Capacity)
    agent_version: str = ""


class ConditionType(StrEnum):
    PULLING = "Pulling"
    CREATING = "Creating"
    LOADING = "Loading"
    READY = "Ready"
    FAILED = "Failed"


class ModelCondition(Report):
    model: str
    type: ConditionType
    reason: str = ""
    message: str = ""
    progress: float | None = Field(default=None, ge=0, le=1)
    revision: int = Field(default=0, ge=0, le=INT_MAX, description="Mod revision of the Model object this condition is about.")
    since: datetime | None = None


class LoadedModel(Report):
    name: str
    size_bytes: int = Field(default=0, ge=0, le=INT_MAX)
    size_vram_bytes: int = Field(default=0, ge=0, le=INT_MAX)
    expires_at: datetime | None = None
    digest: str = Field(default="", max_length=80, description="The weights' digest (sha256 hex) as /api/ps gives it.")
    context_length: int = Field(default=0, ge=0, le=INT_MAX, description="The context it was loaded with (0: not reported).")


class MemoryEstimate(Report):
    """The memory a model on this node's disk would take once loaded here, before it ever was."""

    digest: str = Field(default="", max_length=80)
    num_ctx: int = Field(default=0, ge=0, le=INT_MAX, description="The context it would load with (0: the server's default).")
    parallel: int = Field(default=1, ge=1, le=INT_MAX)
    bytes: int = Field(ge=0, le=INT_MAX)
    source: str = Field(default="disk", max_length=16, description="gguf: from its header; disk: its size on disk + a margin.")


class NodeLoad(Report):
    """What can be told about a node's load without a metrics endpoint in Ollama: its loaded
    runners, how quickly it answers, and the timings it reports. The router adds request figures."""

    in_flight: int = Field(default=0, ge=0, le=INT_MAX)
    queue_depth: int = Field(default=0, ge=0, le=INT_MAX)
    tokens_per_second: float | None = Field(default=None, ge=0)
    avg_latency_ms: float | None = Field(default=None, ge=0)
    loaded_models: int = Field(default=0, ge=0, le=INT_MAX)
    memory_used_bytes: int = Field(default=0, ge=0, le=INT_MAX, description="Sum of the loaded runners' sizes.")
    probe_ms: float | None = Field(default=None, ge=0, description="Round trip of the last health probe.")
    last_load_ms: float | None = Field(default=None, ge=0, description="Ollama's load_duration of the last warm-up.")


class NodeStatus(Report):
    """What an agent reports about its node; the router trusts only live (lease-bound) status."""

    node: Name
    ollama_reachable: bool
    ollama_version: str | None = None
    loaded_models: list[LoadedModel] = Field(default_factory=list)
    available_models: list[str] = Field(default_factory=list)
    applied_revision: int = Field(default=0, ge=0, le=INT_MAX, description="Config revision fully applied on the node.")
    conditions: list[ModelCondition] = Field(default_factory=list)
    last_errors: list[str] = Field(default_factory=list, max_length=20)
    load: NodeLoad = Field(default_factory=NodeLoad)
    draining: bool = Field(default=False, description="Restarting Ollama: the router must not send new requests.")
    supervised: bool = Field(default=False, description="The agent runs Ollama itself (and can restart it).")
    restart_waiting: list[str] = Field(
        default_factory=list, max_length=1000,
        description="Autoscaled models this node holds whose other ready replicas are still below min_replicas: "
        "its Ollama restart waits for them (the autoscaler places a replica elsewhere meanwhile).",
    )  # fmt: skip
    estimates: dict[str, MemoryEstimate] = Field(
        default_factory=dict, max_length=1000,
        description="Per model this node may hold that is on its disk: the memory it would take loaded (what the "
        "autoscaler books until a node reports the size Ollama gave it).",
    )  # fmt: skip
    restart_pending: bool = Field(default=False, description="The agent wants to restart its Ollama (its turn or replicas wait).")
    server_settings: dict[str, str] = Field(default_factory=dict, description="OLLAMA_* settings Ollama runs with.")
    restart_required: list[str] = Field(
        default_factory=list, description="OLLAMA_* settings the configuration changed that need an Ollama restart."
    )
    agent_version: str = ""
    updated_at: datetime | None = None


class ModelLoad(Report):
    """One model's load as one router sees it: the autoscaler's signal."""

    in_flight: dict[str, int] = Field(default_factory=dict, description="Requests in flight per node (nodes with none left out).")
    queued: int = Field(default=0, ge=0, description="Requests waiting in the admission queue for a slot.")
    longest_wait_s: float = Field(default=0, ge=0, description="The longest wait for a slot since the last report.")
    refused: int = Field(default=0, ge=0, description="Requests refused for want of a slot (503) since the router started.")
    tokens_per_s: dict[str, float] = Field(default_factory=dict, description="Tokens generated per second per node.")


class RouterLoad(Report):
    """A router's report under its own lease (``/<ns>/v1/load/<router>``): its requests in flight
    per node, the nodes it sees draining, and each model's load. An agent draining its node waits
    until every live router has seen the drain and has nothing in flight there; the autoscaler
    reads ``models`` (a report older than a few refreshes is unknown, never a reason to scale down)."""

    router: str = Field(min_length=1, max_length=253)
    in_flight: dict[str, int] = Field(default_factory=dict, description="Requests in flight per node (nodes with none left out).")
    draining: list[str] = Field(default_factory=list, description="Nodes whose status says draining, as this router sees it.")
    models: dict[str, ModelLoad] = Field(default_factory=dict, description="Per model with any load, its figures.")
    updated_at: datetime | None = None
