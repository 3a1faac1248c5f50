"""The RAG engine: ingestion (chunk, embed, write, idempotent by content hash), re-indexing when a
collection's embedding model or vector location changes, and retrieval (vector + BM25 fused by
reciprocal rank, score threshold, cached). Generation lives in rag/answer.py."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from rag.cache import Cache
from rag.catalog import Catalog, StoredChunk, StoredDocument
from rag.chunking import chunk_text
from rag.embedding import Embedder
from rag.errors import DocumentTooLarge, RerankUnavailable
from rag.fusion import Fused, fuse
from rag.rerank import Reranker
from rag.store import Filter, Record, VectorStore, check_filter
from schemas.model import Model
from schemas.rag import RagCollection, RagDocument, RagIngestResult, RagSource

log = logging.getLogger(__name__)
T = TypeVar("T")

StoreFor = Callable[[RagCollection], VectorStore]
EmbedderFor = Callable[[Model], Embedder]
Progress = Callable[[int, int], None]  # (chunks embedded, chunks in all)


@dataclass(frozen=True, slots=True)
class Limits:
    document_bytes: int = 2 * 1024 * 1024
    batch_documents: int = 1000
    batch_bytes: int = 16 * 1024 * 1024
    embed_batch: int = 64
    cache_ttl_s: int = 600


@dataclass(frozen=True, slots=True)
class Candidates:
    vector: list[tuple[str, float]]  # (chunk id, cosine similarity), best first
    keyword: list[tuple[str, float]]  # (chunk id, BM25 score), best first


@dataclass(frozen=True, slots=True)
class Retrieved:
    sources: list[RagSource]
    embed_ms: float
    retrieve_ms: float
    cached: bool
    rerank_ms: float = 0.0


def content_hash(doc: RagDocument, collection: RagCollection) -> str:
    """Changes with the text, its format, its metadata and the collection's chunking."""
    chunking = collection.spec.chunking.model_dump_json()
    meta = orjson.dumps(doc.metadata, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(b"\x00".join([doc.text.encode(), doc.format.encode(), meta, chunking.encode()])).hexdigest()


class RagEngine:
    def __init__(self, *, catalog: Catalog, store_for: StoreFor, embedder_for: EmbedderFor, cache: Cache, limits: Limits,
                 reranker: Reranker | None = None) -> None:  # fmt: skip
        self.catalog, self.limits = catalog, limits
        self._store_for, self._embedder_for, self._cache, self._reranker = store_for, embedder_for, cache, reranker
        self._locks: dict[str, asyncio.Lock] = {}
        self._ready_at: dict[str, str] = {}  # collection -> the location this process last made it ready for

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    @staticmethod
    def _location(collection: RagCollection, embedder: Embedder) -> str:
        spec = collection.spec
        return f"{embedder.fingerprint}|{spec.backend.value}|{spec.server_url or 'embedded'}|{spec.collection}"

    async def _ready(self, collection: RagCollection, embedder: Embedder) -> int:
        """Make the vector collection match the catalog; re-embed every chunk when the embedding
        model or the vector location changed. The number of chunks re-embedded."""
        store, location = self._store_for(collection), self._location(collection, embedder)
        if self._ready_at.get(collection.name) == location:
            return 0
        fresh = await asyncio.to_thread(store.ensure, collection.spec.collection, fingerprint=embedder.fingerprint)
        if await asyncio.to_thread(self.catalog.fingerprint, collection.name) == location and not fresh:
            self._ready_at[collection.name] = location
            return 0
        total, done = await asyncio.to_thread(self.catalog.chunk_count, collection.name), 0
        if total:
            log.info("re-indexing collection '%s' (%d chunks) for %s", collection.name, total, location)
        batches = self.catalog.all_chunks(collection.name, batch=self.limits.embed_batch * 4)
        while batch := await asyncio.to_thread(next, batches, None):
            vectors = await embedder.embed([c.text for c in batch])
            await asyncio.to_thread(store.upsert, collection.spec.collection, _records(batch, vectors))
            done += len(batch)
        await asyncio.to_thread(self.catalog.set_fingerprint, collection.name, location)
        self._ready_at[collection.name] = location
        return done

    async def ingest(
        self, collection: RagCollection, model: Model, documents: Sequence[RagDocument], *, progress: Progress | None = None
    ) -> RagIngestResult:
        started = time.perf_counter()
        self._check_size(documents)
        embedder = self._embedder_for(model)
        async with self._lock(collection.name):
            reindexed = await self._ready(collection, embedder)
            known = await asyncio.to_thread(self.catalog.hashes, collection.name, [d.id for d in documents])
            changed, unchanged = await asyncio.to_thread(_prepare, collection, documents, known)  # chunking is CPU work
            chunks = [c for d in changed for c in d.chunks]
            embed_started = time.perf_counter()
            vectors: list[list[float]] = []
            for start in range(0, len(chunks), self.limits.embed_batch):  # all embedded before anything is written
                vectors += await embedder.embed([c.text for c in chunks[start : start + self.limits.embed_batch]])
                if progress:
                    progress(len(vectors), len(chunks))
            embed_ms = (time.perf_counter() - embed_started) * 1000
            await self._write(collection, chunks, vectors, changed)
        return RagIngestResult(
            collection=collection.name, ingested=[d.id for d in changed], unchanged=unchanged, chunks=len(chunks),
            reindexed=reindexed, embed_ms=round(embed_ms, 1), total_ms=round((time.perf_counter() - started) * 1000, 1),
        )  # fmt: skip

    async def _write(
        self, collection: RagCollection, chunks: list[StoredChunk], vectors: list[list[float]], docs: list[StoredDocument]
    ) -> None:
        """Vectors first, then the catalog in one transaction (the switch-over); the vectors of the
        replaced versions go last. A failure before the switch-over removes the new vectors."""
        if not docs:
            return
        store, name = self._store_for(collection), collection.spec.collection
        new_ids = [c.id for c in chunks]
        try:
            await asyncio.to_thread(store.upsert, name, _records(chunks, vectors))
            old = await _outcome(asyncio.to_thread(self.catalog.replace, collection.name, docs))
        except BaseException:
            await _quietly(store.delete, name, new_ids)
            raise
        stale = sorted(set(old) - set(new_ids))
        await _quietly(store.delete, name, stale)  # unreferenced by the catalog, so never returned anyway

    async def delete(self, collection: RagCollection, doc_ids: Sequence[str]) -> list[str]:
        """Remove documents; the ids that were there."""
        async with self._lock(collection.name):
            present = list(await asyncio.to_thread(self.catalog.hashes, collection.name, list(doc_ids)))
            if present:
                old = await asyncio.to_thread(self.catalog.remove, collection.name, present)
                await _quietly(self._store_for(collection).delete, collection.spec.collection, old)
        return present

    async def retrieve(self, collection: RagCollection, model: Model, query: str, *, top_k: int | None = None,
                       filters: object = None) -> Retrieved:  # fmt: skip
        where = check_filter(filters)
        k = top_k or collection.spec.top_k
        reranker = self._reranker_for(collection)
        generation = await asyncio.to_thread(self.catalog.generation, collection.name)
        revisions = (collection.metadata.revision, model.metadata.revision, generation, reranker and reranker.fingerprint)
        key = _key("hits", collection.name, *revisions, query, k, where)
        held = await self._cache.get(key)
        if held is not None:
            return Retrieved([RagSource.model_validate(s) for s in orjson.loads(held)], 0.0, 0.0, cached=True)
        started = time.perf_counter()
        found, embed_ms = await self._gather(collection, model, query, k, where)
        sources, rerank_ms = await asyncio.to_thread(self._rank, collection, found, query, k, reranker)
        await self._cache.set(key, orjson.dumps([s.model_dump() for s in sources]), ttl_s=self.limits.cache_ttl_s)
        total_ms = (time.perf_counter() - started) * 1000
        return Retrieved(sources, embed_ms, total_ms - embed_ms, cached=False, rerank_ms=rerank_ms)

    def _reranker_for(self, collection: RagCollection) -> Reranker | None:
        """The reranker a collection asks for (None when it does not); checked before any work."""
        if not collection.spec.rerank.enabled:
            return None
        if self._reranker is None:
            raise RerankUnavailable(
                f"collection '{collection.name}' has rerank.enabled but this control plane has no reranker: set "
                "LLMTUNE_RAG__RERANKER_DIR to a folder holding an ONNX cross-encoder (model.onnx, tokenizer.json), "
                "or turn rerank off"
            )
        return self._reranker

    async def candidates(self, collection: RagCollection, model: Model, query: str, *, top_k: int | None = None,
                         filters: object = None) -> Candidates:  # fmt: skip
        """What each side finds for ``query`` before fusion (uncached): the evaluation harness
        ranks them by every fusion method in turn."""
        return (await self._gather(collection, model, query, top_k or collection.spec.top_k, check_filter(filters)))[0]

    async def _gather(
        self, collection: RagCollection, model: Model, query: str, k: int, where: Filter | None
    ) -> tuple[Candidates, float]:
        """Each side's candidates, and the ms the query's embedding took. The keyword search runs
        beside the embedding and the vector search (in another thread), not after them."""
        spec = collection.spec
        fetch = max(4 * k, 20)  # each ranking looks deeper than k, so fusion can lift a chunk both found
        if spec.rerank.enabled:
            fetch = max(fetch, spec.rerank.top_n)
        words = None
        if spec.hybrid_weight != 1:
            words = asyncio.ensure_future(asyncio.to_thread(self.catalog.keyword, collection.name, query, k=fetch, where=where))
        try:
            started = time.perf_counter()
            vector = await self._query_vector(collection, model, query)
            embed_ms = (time.perf_counter() - started) * 1000
            near: list[tuple[str, float]] = []
            if vector is not None:
                store = self._store_for(collection)
                matches = await asyncio.to_thread(store.query, spec.collection, vector, k=fetch, where=where)
                near = [(m.id, m.similarity) for m in matches if m.similarity >= spec.score_threshold]
            return Candidates(near, await words if words is not None else []), embed_ms
        except BaseException:
            if words is not None:
                words.cancel()
            raise

    async def _query_vector(self, collection: RagCollection, model: Model, query: str) -> list[float] | None:
        """The query's embedding (None when the collection ranks by BM25 alone)."""
        if collection.spec.hybrid_weight == 0:
            return None
        embedder = self._embedder_for(model)
        if self._ready_at.get(collection.name) != self._location(collection, embedder):
            async with self._lock(collection.name):  # not held otherwise: queries go on during an ingest
                await self._ready(collection, embedder)
        return await self._embed_query(embedder, query)

    async def _embed_query(self, embedder: Embedder, query: str) -> list[float]:
        key = _key("embedding", embedder.fingerprint, query)
        found = await self._cache.get(key)
        if found is not None:
            vector: list[float] = orjson.loads(found)
            return vector
        vector = (await embedder.embed([query]))[0]
        await self._cache.set(key, orjson.dumps(vector), ttl_s=self.limits.cache_ttl_s)
        return vector

    def _rank(
        self, collection: RagCollection, found: Candidates, query: str, k: int, reranker: Reranker | None
    ) -> tuple[list[RagSource], float]:
        """The ``k`` best chunks, fused (and, with ``reranker``, the best ``rerank.top_n`` of them
        reordered by it), and the ms the reranker took."""
        fused = fuse(found.vector, found.keyword, query=query, weight=collection.spec.hybrid_weight)
        depth = max(k, collection.spec.rerank.top_n) if reranker is not None else k
        held = self.catalog.chunks(collection.name, [f.id for f in fused])
        picked: list[tuple[Fused, StoredChunk]] = [(f, held[f.id]) for f in fused if f.id in held][:depth]
        scores: list[float | None] = [None] * len(picked)
        rerank_ms = 0.0
        if reranker is not None and picked:
            started = time.perf_counter()
            judged = reranker.score(query, [chunk.text for _, chunk in picked])
            order = sorted(range(len(picked)), key=lambda i: -judged[i])  # stable: ties keep the fused order
            picked, scores = [picked[i] for i in order], [judged[i] for i in order]
            rerank_ms = (time.perf_counter() - started) * 1000
        return [
            RagSource(
                n=i + 1,
                document_id=chunk.doc_id,
                chunk=chunk.index,
                score=round(f.score, 4),
                similarity=None if f.similarity is None else round(f.similarity, 4),
                keyword_rank=f.keyword_rank,
                rerank_score=None if score is None else round(score, 4),
                snippet=chunk.text,
                metadata={k_: v for k_, v in chunk.metadata.items() if k_ != "doc_id"},
            )
            for i, ((f, chunk), score) in enumerate(zip(picked[:k], scores[:k], strict=True))
        ], rerank_ms

    def _check_size(self, documents: Sequence[RagDocument]) -> None:
        lim = self.limits
        if len(documents) > lim.batch_documents:
            raise DocumentTooLarge(
                f"{len(documents)} documents in one batch; the limit is {lim.batch_documents}: send smaller batches"
            )
        total = 0
        for doc in documents:
            size = len(doc.text.encode())
            total += size
            if size > lim.document_bytes:
                raise DocumentTooLarge(
                    f"document '{doc.id}' is {size:,} bytes; the limit is {lim.document_bytes:,}: split it into several documents"
                )
        if total > lim.batch_bytes:
            raise DocumentTooLarge(
                f"the batch holds {total:,} bytes of text; the limit is {lim.batch_bytes:,}: send smaller batches"
            )


def _prepare(
    collection: RagCollection, documents: Sequence[RagDocument], known: dict[str, str]
) -> tuple[list[StoredDocument], list[str]]:
    """The documents to write, chunked, and the ids of those held already with the same content."""
    changed: list[StoredDocument] = []
    unchanged: list[str] = []
    for doc in documents:
        digest = content_hash(doc, collection)
        if known.get(doc.id) == digest:
            unchanged.append(doc.id)
            continue
        pieces = chunk_text(doc.text, collection.spec.chunking, markdown=doc.format == "markdown")
        meta = {**doc.metadata, "doc_id": doc.id}
        chunks = [StoredChunk(f"{doc.id}#{digest[:16]}#{p.index}", doc.id, p.index, p.text, meta) for p in pieces]
        changed.append(StoredDocument(doc.id, digest, len(doc.text.encode()), dict(doc.metadata), chunks))
    return changed, unchanged


def _records(chunks: Sequence[StoredChunk], vectors: Sequence[Sequence[float]]) -> list[Record]:
    return [Record(c.id, v, c.metadata) for c, v in zip(chunks, vectors, strict=True)]


def _key(kind: str, *parts: object) -> str:
    return f"{kind}:" + hashlib.sha256(orjson.dumps(parts, default=str, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def _outcome(work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result even when this task is cancelled meanwhile (the client left): a commit
    running in a thread goes on regardless, and what follows depends on whether it happened."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        result = await future  # a failed commit raises here instead; either way the cancel is honoured below
        task = asyncio.current_task()
        if task is not None:
            task.cancel()  # re-arm it: the caller's clean-up runs, then the task ends cancelled
        return result


async def _quietly(call: Callable[[str, list[str]], None], name: str, ids: list[str]) -> None:
    """Best-effort clean-up of vectors no catalog row refers to (a leftover is never returned)."""
    if not ids:
        return
    try:
        await asyncio.to_thread(call, name, ids)
    except Exception as exc:  # the vector DB may be the thing that failed
        log.warning("could not remove %d unreferenced vector(s) from '%s': %s", len(ids), name, exc)
