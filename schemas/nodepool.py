"""The ``NodePool`` kind: a named set of Ollama nodes selected by labels."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.common import ConfigObject, LabelKey, LabelValue, Strict


class NodePoolSpec(Strict):
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    description: str = Field(default="", max_length=1000)
    max_loaded_models: int | None = Field(default=None, ge=1, le=1000)
    max_concurrency_per_node: int | None = Field(
        default=None, ge=1, le=10_000, description="Requests the router sends to one node of the pool at once."
    )


class NodePool(ConfigObject):
    """Groups nodes (for example by GPU type) so models can be placed on a pool."""

    plural: ClassVar[str] = "nodepools"
    kind: Literal["NodePool"] = "NodePool"
    spec: NodePoolSpec = Field(default_factory=NodePoolSpec)
