"""Agent settings (pydantic-settings): ``LLMTUNE_AGENT__*`` plus the shared ``LLMTUNE_STORE__*`` group.

Example: ``LLMTUNE_AGENT__NODE=gpu-1 LLMTUNE_AGENT__OLLAMA_URL=http://127.0.0.1:11434
LLMTUNE_AGENT__LABELS=gpu=a100,zone=eu``.
"""

from __future__ import annotations

import shlex
import socket
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from controlplane.store.settings import StoreSettings
from schemas.common import NAME_PATTERN


def _pairs(value: str, *, what: str, prefix: str = "") -> dict[str, str]:
    """'k=v,k=v' from the environment as a mapping; a pair without '=' (or the prefix) is an error."""
    pairs = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in pairs if "=" not in p or not p.startswith(prefix)]
    if bad:
        raise ValueError(f"{what} separated by commas; got {bad}")
    return dict(p.split("=", 1) for p in pairs)


class AgentGroup(BaseModel):
    node: str = Field(
        default_factory=lambda: socket.gethostname().lower(), pattern=NAME_PATTERN, description="Node name (unique)."
    )
    ollama_url: str = Field(default="http://127.0.0.1:11434", description="The Ollama server this agent manages.")
    labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="Node labels, 'k=v,k=v' in the environment (matched by node selectors)."
    )
    memory_bytes: int = Field(default=0, ge=0, description="Memory the node offers to models (reported as capacity).")
    gpu_memory_bytes: int = Field(default=0, ge=0, description="GPU memory of the node (reported as capacity).")
    max_loaded_models: int = Field(default=3, ge=1, description="Models the node can hold in memory at once.")
    max_parallel: int = Field(default=4, ge=1, description="Requests the node serves at once.")
    host: str = Field(default="127.0.0.1", description="Bind address of the agent's /metrics and /healthz.")
    port: int = Field(default=8710, ge=0, le=65535, description="Port of the agent's HTTP endpoint (0: none).")
    lease_ttl_s: int = Field(default=10, ge=2, le=300, description="TTL of the lease the node's keys are bound to.")
    probe_interval_s: float = Field(default=2.0, gt=0, description="How often Ollama's health is checked.")
    resync_interval_s: float = Field(default=30.0, gt=0, description="Reconcile at least this often (catches drift).")
    max_backoff_s: float = Field(default=30.0, gt=0, description="Longest wait between failed reconcile passes.")
    ollama_command: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Command that starts Ollama (e.g. 'ollama serve'); when set the agent supervises it and applies "
        "node-pool server settings by restarting it.",
    )
    drain_s: float = Field(
        default=30.0, ge=0,
        description="Longest wait for the requests in flight to end: before a supervised Ollama restarts, and before a model "
        "the autoscaler took away is unloaded.",
    )  # fmt: skip
    ollama_models_dir: Path | None = Field(
        default=None,
        description="Ollama's models directory (its OLLAMA_MODELS), when the agent can read it: the memory a model will take "
        "is estimated from its GGUF header there; otherwise from its size on disk.",
    )
    restart_wait_s: float = Field(
        default=120.0, ge=0,
        description="Longest a restart of a supervised Ollama waits, holding its pool's turn, until the autoscaled models "
        "the node holds have min_replicas ready elsewhere; then a later pass tries again (never fewer ready).",
    )  # fmt: skip
    ollama_environment: Annotated[dict[str, str] | None, NoDecode] = Field(
        default=None,
        description="The OLLAMA_* start-time settings the Ollama beside this agent runs with ('K=V,K=V'; empty: none), "
        "when another container starts it (Kubernetes): restart_required lists what the node pool wants otherwise. "
        "Unset: assumed to be what the pool wanted when the agent started.",
    )
    control_plane_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The control plane's API (http://host:8700): the agent fetches the adapter files it keeps "
        "(LoRA fine-tuning outputs) from there.",
    )
    control_plane_token: SecretStr | None = Field(default=None, description="A viewer token for the control plane's API.")

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: object) -> object:
        return _pairs(value, what="labels are 'key=value' pairs") if isinstance(value, str) else value

    @field_validator("ollama_environment", mode="before")
    @classmethod
    def _environment(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return _pairs(value, what="ollama_environment is 'OLLAMA_NAME=value' pairs", prefix="OLLAMA_")

    @field_validator("ollama_command", mode="before")
    @classmethod
    def _command(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value


class AgentSettings(BaseSettings):
    """Every agent setting; read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="LLMTUNE_", env_nested_delimiter="__", extra="ignore")

    store: StoreSettings = Field(default_factory=StoreSettings)
    agent: AgentGroup = Field(default_factory=AgentGroup)
