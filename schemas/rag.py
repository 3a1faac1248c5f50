"""The ``RagCollection`` kind: a retrieval collection tuned live like any other configuration."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AnyHttpUrl, Field, model_validator

from schemas.common import ConfigObject, Name, Strict


class VectorBackend(StrEnum):
    CHROMA = "chroma"
    WEAVIATE = "weaviate"


class Chunking(Strict):
    strategy: Literal["chars", "tokens", "markdown"] = "markdown"
    size: int = Field(default=800, ge=50, le=16_000)
    overlap: int = Field(default=100, ge=0)

    @model_validator(mode="after")
    def _overlap(self) -> Chunking:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


DEFAULT_TEMPLATE = (
    "Answer the question using only the numbered sources below. Cite sources as [n].\n\n"
    "{context}\n\nQuestion: {question}\nAnswer:"
)


class RagCollectionSpec(Strict):
    backend: VectorBackend = VectorBackend.CHROMA
    collection: str = Field(min_length=3, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]$")
    server_url: AnyHttpUrl | None = Field(default=None, description="Vector DB server; embedded when absent.")
    embedding_model: Name = Field(description="Model object with the 'embed' capability.")
    chunking: Chunking = Field(default_factory=Chunking)
    top_k: int = Field(default=5, ge=1, le=100)
    score_threshold: float = Field(default=0.0, ge=0, le=1)
    hybrid_weight: float = Field(default=0.5, ge=0, le=1, description="0 = BM25 only, 1 = vector only.")
    prompt_template: str = Field(default=DEFAULT_TEMPLATE, max_length=20_000)
    generation_route: Name | None = Field(default=None, description="Route used to generate the answer.")

    @model_validator(mode="after")
    def _template(self) -> RagCollectionSpec:
        missing = [p for p in ("{context}", "{question}") if p not in self.prompt_template]
        if missing:
            raise ValueError(f"prompt_template lacks the placeholder(s) {', '.join(missing)}")
        return self


class RagCollection(ConfigObject):
    """A document collection with its embedding, chunking, retrieval and prompt settings."""

    plural: ClassVar[str] = "rag"
    kind: Literal["RagCollection"] = "RagCollection"
    spec: RagCollectionSpec
