"""The ``NodePool`` kind: a named set of Ollama nodes selected by labels."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from schemas.common import ConfigObject, LabelKey, LabelValue, Strict


class KvCacheType(StrEnum):
    F16 = "f16"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"


class ServerSettings(Strict):
    """Settings Ollama reads only when it starts (its OLLAMA_* environment): changing one means a
    restart, which the agent performs (drain, restart, re-warm) when it supervises Ollama."""

    num_parallel: int | None = Field(default=None, ge=1, le=256, description="OLLAMA_NUM_PARALLEL")
    max_loaded_models: int | None = Field(default=None, ge=1, le=64, description="OLLAMA_MAX_LOADED_MODELS")
    context_length: int | None = Field(default=None, ge=128, le=2_097_152, description="OLLAMA_CONTEXT_LENGTH")
    flash_attention: bool | None = Field(default=None, description="OLLAMA_FLASH_ATTENTION")
    kv_cache_type: KvCacheType | None = Field(default=None, description="OLLAMA_KV_CACHE_TYPE (needs flash attention)")

    @model_validator(mode="after")
    def _quantized_cache_needs_flash_attention(self) -> ServerSettings:
        if self.kv_cache_type not in (None, KvCacheType.F16) and not self.flash_attention:
            raise ValueError(
                f"kv_cache_type {self.kv_cache_type.value} needs flash_attention: true (Ollama ignores it otherwise)"
            )
        return self

    def environment(self) -> dict[str, str]:
        """The OLLAMA_* variables these settings mean (unset ones are left to Ollama's defaults)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude_none=True, mode="json").items():
            env[f"OLLAMA_{name.upper()}"] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env


def parallel_slots(environment: Mapping[str, str], default: int) -> int:
    """The parallel slots of an Ollama started with ``environment`` (its OLLAMA_* variables), else ``default``."""
    value = environment.get("OLLAMA_NUM_PARALLEL", "")
    return int(value) if value.isdigit() and int(value) > 0 else default


class NodePoolSpec(Strict):
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    description: str = Field(default="", max_length=1000)
    max_loaded_models: int | None = Field(default=None, ge=1, le=1000)
    max_concurrency_per_node: int | None = Field(
        default=None, ge=1, le=10_000, description="Requests the router sends to one node of the pool at once."
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    prune: bool = Field(
        default=False, description="Agents delete models that no configuration places on the node (never by default)."
    )


class NodePool(ConfigObject):
    """Groups nodes (for example by GPU type) so models can be placed on a pool."""

    plural: ClassVar[str] = "nodepools"
    kind: Literal["NodePool"] = "NodePool"
    spec: NodePoolSpec = Field(default_factory=NodePoolSpec)
