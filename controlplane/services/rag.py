"""RAG requests against the watched configuration: finds the collection and its embedding model in
the informer's view, and drives the engine (ingest, delete, list, query) and the generator."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from controlplane.settings import RagSettings
from controlplane.store.view import ConfigView
from rag.answer import Generator, build_prompt
from rag.cache import Cache, MemoryCache, RedisCache
from rag.catalog import Catalog, SqliteCatalog
from rag.chroma import ChromaStore
from rag.embedding import embedder_for
from rag.engine import Limits, Progress, RagEngine, Retrieved
from rag.errors import BadInput, RagError, UnknownCollection
from rag.pg_catalog import PgCatalog, import_sqlite
from rag.rerank import open_reranker
from rag.router_client import RouterClient
from rag.store import VectorStore
from schemas.model import Model
from schemas.rag import (
    RagAnswer,
    RagCollection,
    RagDocument,
    RagDocumentInfo,
    RagDocumentList,
    RagIngestResult,
    RagQuery,
    RagTimings,
    VectorBackend,
)

log = logging.getLogger(__name__)


class RagService:
    def __init__(self, view: ConfigView, engine: RagEngine, generator: Generator) -> None:
        self._view, self.engine, self._generator = view, engine, generator

    def resolve(self, name: str) -> tuple[RagCollection, Model]:
        collection = self._view.get("rag", name, RagCollection)
        if collection is None:
            known = sorted(n for (kind, n) in self._view.state if kind == "rag")
            hint = f"; collections: {', '.join(known)}" if known else "; create one with `llmctl apply` (kind RagCollection)"
            raise UnknownCollection(f"no RAG collection '{name}'{hint}")
        model = self._view.get("models", collection.spec.embedding_model, Model)
        if model is None:  # validation forbids it; a concurrent delete may not
            raise BadInput(f"collection '{name}' names embedding model '{collection.spec.embedding_model}', which does not exist")
        return collection, model

    async def ingest(self, name: str, documents: Sequence[RagDocument], *, progress: Progress | None = None) -> RagIngestResult:
        collection, model = self.resolve(name)
        return await self.engine.ingest(collection, model, documents, progress=progress)

    async def delete(self, name: str, doc_ids: Sequence[str]) -> list[str]:
        collection, _ = self.resolve(name)
        return await self.engine.delete(collection, doc_ids)

    def documents(self, name: str, *, offset: int, limit: int) -> RagDocumentList:
        collection, _ = self.resolve(name)
        docs, total = self.engine.catalog.documents(collection.name, offset=offset, limit=limit)
        infos = [
            RagDocumentInfo(id=d.id, hash=d.hash, chunks=d.chunks, bytes=d.bytes, metadata=d.metadata, updated=d.updated)
            for d in docs
        ]
        return RagDocumentList(collection=name, documents=infos, total=total, offset=offset)

    async def _retrieve(self, query: RagQuery) -> tuple[RagCollection, Retrieved]:
        collection, model = self.resolve(query.collection)
        found = await self.engine.retrieve(collection, model, query.query, top_k=query.top_k, filters=query.filters)
        return collection, found

    async def query(self, query: RagQuery) -> RagAnswer:
        started = time.perf_counter()
        collection, found = await self._retrieve(query)
        answer = model = node = None
        generate_ms = 0.0
        if not query.retrieve_only:
            generated_at = time.perf_counter()
            out = await self._generator.generate(collection, build_prompt(collection, query.query, found.sources))
            answer, model, node = out.text, out.model, out.node
            generate_ms = (time.perf_counter() - generated_at) * 1000
        return RagAnswer(
            collection=collection.name, answer=answer, sources=found.sources, cached=found.cached, model=model, node=node,
            timings=_timings(found, generate_ms, started),
        )  # fmt: skip

    async def query_stream(self, query: RagQuery) -> AsyncIterator[bytes]:
        """NDJSON: the sources first, then the answer's text pieces, then the timings. Errors before
        the first line raise (an HTTP error answer); later ones become an ``error`` line."""
        started = time.perf_counter()
        collection, found = await self._retrieve(query)
        head: dict[str, Any] = {"type": "sources", "collection": collection.name, "cached": found.cached,
                                "sources": [s.model_dump() for s in found.sources]}  # fmt: skip
        if query.retrieve_only:
            pieces: AsyncIterator[str] | None = None
        else:
            generated_at = time.perf_counter()
            decision, pieces = await self._generator.stream(collection, build_prompt(collection, query.query, found.sources))
            head |= {"model": decision.model, "node": decision.node}

        async def lines() -> AsyncIterator[bytes]:
            yield _line(head)
            generate_ms = 0.0
            if pieces is not None:
                try:
                    async for text in pieces:
                        yield _line({"type": "delta", "text": text})
                except RagError as exc:
                    yield _line({"type": "error", "error": str(exc)})
                    return
                generate_ms = (time.perf_counter() - generated_at) * 1000
            yield _line({"type": "done", "timings": _timings(found, generate_ms, started).model_dump()})

        return lines()


def _timings(found: Retrieved, generate_ms: float, started: float) -> RagTimings:
    total = (time.perf_counter() - started) * 1000
    return RagTimings(
        embed_ms=round(found.embed_ms, 2),
        retrieve_ms=round(found.retrieve_ms, 2),
        rerank_ms=round(found.rerank_ms, 2),
        generate_ms=round(generate_ms, 2),
        total_ms=round(total, 2),
    )


def _line(item: dict[str, Any]) -> bytes:
    return orjson.dumps(item) + b"\n"


class Stores:
    """One adapter per vector database location, opened on first use."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._open: dict[tuple[str, str], VectorStore] = {}

    def __call__(self, collection: RagCollection) -> VectorStore:
        spec = collection.spec
        where = str(spec.server_url) if spec.server_url else ""
        found = self._open.get((spec.backend.value, where))
        if found is None:
            if spec.backend is VectorBackend.WEAVIATE:
                if not where:
                    raise BadInput(f"collection '{collection.name}': the weaviate backend needs spec.server_url")
                from rag.weaviate import WeaviateStore

                found = WeaviateStore(url=where)
            else:
                found = ChromaStore(url=where) if where else ChromaStore(path=self._data_dir / "chroma")
            self._open[(spec.backend.value, where)] = found
        return found


def open_catalog(settings: RagSettings, db: Engine) -> Catalog:
    """In the metadata database when it is PostgreSQL (replicas share it); else a SQLite file
    with FTS5 under ``data_dir``."""
    local = settings.data_dir / "catalog.sqlite"
    if db.dialect.name != "postgresql":
        return SqliteCatalog(local)
    catalog = PgCatalog(db)
    if local.exists():  # this control plane ran on SQLite before: what it ingested comes along, once
        source = SqliteCatalog(local)
        try:
            copied = import_sqlite(source, catalog)
        finally:
            source.close()
        local.rename(local.with_name("catalog.sqlite.imported"))
        log.warning("RAG catalog: %s imported from %s into the database", copied or "nothing", local)
    return catalog


def open_rag(
    settings: RagSettings, view: ConfigView, router: RouterClient, db: Engine
) -> tuple[RagService, Callable[[], Awaitable[None]]]:
    """The service and its clean-up, from settings: embedded Chroma under ``data_dir`` (or the
    collection's server), the catalog (``open_catalog``), the cache in Redis when ``redis_url``
    is set (its keys carry the catalog's generation, so replicas never serve each other's stale
    results)."""
    cache: Cache = RedisCache(settings.redis_url) if settings.redis_url else MemoryCache()
    catalog = open_catalog(settings, db)
    limits = Limits(
        document_bytes=settings.max_document_bytes,
        batch_documents=settings.max_batch_documents,
        batch_bytes=settings.max_batch_bytes,
        cache_ttl_s=settings.cache_ttl_s,
        embed_batch=settings.embed_batch,
    )
    engine = RagEngine(
        catalog=catalog,
        store_for=Stores(settings.data_dir),
        embedder_for=lambda model: embedder_for(model, router),
        cache=cache,
        limits=limits,
        reranker=open_reranker(settings.reranker_dir),
    )

    async def close() -> None:
        if isinstance(cache, RedisCache):
            await cache.close()
        catalog.close()

    return RagService(view, engine, Generator(router)), close
