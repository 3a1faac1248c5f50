"""The ``RagCollection`` kind: a retrieval collection tuned live like any other configuration."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, StringConstraints, model_validator

from schemas.common import INT_MAX, ConfigObject, Int64, Name, Strict


class VectorBackend(StrEnum):
    CHROMA = "chroma"
    WEAVIATE = "weaviate"


class Chunking(Strict):
    strategy: Literal["chars", "tokens", "markdown"] = "markdown"
    size: int = Field(default=800, ge=50, le=16_000)
    overlap: int = Field(default=100, ge=0, le=INT_MAX)

    @model_validator(mode="after")
    def _overlap(self) -> Chunking:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


class Rerank(Strict):
    enabled: bool = Field(default=False, description="Order the fused candidates by the control plane's cross-encoder.")
    top_n: int = Field(default=20, ge=1, le=100, description="How many of the best fused candidates it reads (at least top_k).")


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
    hybrid_weight: float | None = Field(
        default=None, ge=0, le=1,
        description="The vector side's share in the fused score (0 = BM25 only, 1 = vector only). Unset: adaptive, "
        "set per query (0.8 for a plain question, down to 0.1 for one made of identifiers such as option names or codes).",
    )  # fmt: skip
    rerank: Rerank = Field(default_factory=Rerank, description="Cross-encoder reranking (LLMTUNE_RAG__RERANKER_DIR).")
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


# --- the RAG API's requests and answers (control plane /api/v1/rag) ---

MetaValue = str | Int64 | float | bool
#: Names of document metadata fields (and so of query filter fields).
METADATA_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]


class RagDocument(Strict):
    """One document to ingest; re-sending the same id with the same text (and chunking) does no work."""

    id: DocumentId
    text: str = Field(min_length=1)
    format: Literal["text", "markdown"] = "text"
    metadata: dict[Annotated[str, StringConstraints(pattern=METADATA_KEY)], MetaValue] = Field(
        default_factory=dict, max_length=32
    )


class RagIngestRequest(Strict):
    documents: list[RagDocument] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> RagIngestRequest:
        seen: set[str] = set()
        for i, doc in enumerate(self.documents):
            if doc.id in seen:
                raise ValueError(f"documents[{i}]: id '{doc.id}' appears twice in this batch")
            seen.add(doc.id)
        return self


class RagIngestResult(BaseModel):
    collection: str
    ingested: list[str] = Field(description="Documents written (new or changed).")
    unchanged: list[str] = Field(description="Documents already held with the same content: nothing was done.")
    chunks: Int64 = Field(description="Chunks written.")
    reindexed: Int64 = Field(default=0, description="Chunks re-embedded first because the embedding model changed.")
    embed_ms: float
    total_ms: float


class RagDocumentInfo(BaseModel):
    id: str
    hash: str
    chunks: Int64
    bytes: Int64
    metadata: dict[str, MetaValue]
    updated: float


class RagDocumentsDeleted(BaseModel):
    collection: str
    deleted: list[str] = Field(description="The documents removed, with their chunks.")


class RagDocumentList(BaseModel):
    collection: str
    documents: list[RagDocumentInfo]
    total: Int64
    offset: Int64


class RagQuery(Strict):
    collection: Name
    query: str = Field(min_length=1, max_length=20_000)
    top_k: int | None = Field(default=None, ge=1, le=100, description="Default: the collection's top_k.")
    filters: dict[str, Any] | None = Field(default=None, description="metadata field -> value, or {'$in': [values]}")
    stream: bool = False
    retrieve_only: bool = False

    @model_validator(mode="after")
    def _not_blank(self) -> RagQuery:
        if not self.query.strip():
            raise ValueError("query is blank")
        return self


class RagSource(BaseModel):
    n: Int64 = Field(description="The number the prompt cites it by.")
    document_id: str
    chunk: Int64
    score: float = Field(
        description="Fused score in [0, 1]: each search's scores scaled to [0, 1] and weighted by the vector share; "
        "1.0 = first in every search that counts."
    )
    similarity: float | None = Field(default=None, description="Cosine similarity to the query, when the vector search found it.")
    keyword_rank: Int64 | None = Field(default=None, description="1-based BM25 rank, when the keyword search found it.")
    rerank_score: float | None = Field(default=None, description="The cross-encoder's score, when the collection reranks.")
    snippet: str
    metadata: dict[str, MetaValue]


class RagTimings(BaseModel):
    embed_ms: float
    retrieve_ms: float = Field(description="Vector and keyword search, fusion and reranking.")
    rerank_ms: float = Field(default=0.0, description="The cross-encoder's share of retrieve_ms.")
    generate_ms: float
    total_ms: float


class RagAnswer(BaseModel):
    collection: str
    answer: str | None
    sources: list[RagSource]
    timings: RagTimings
    cached: bool = Field(description="The retrieval came from the cache.")
    model: str | None = None
    node: str | None = None
