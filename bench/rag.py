"""RAG benchmark, one run: ingestion throughput, and retrieval latency (no generation) at 10,000
and 100,000 chunks in embedded Chroma, with each catalog (SQLite FTS5 and PostgreSQL).

* Ingestion with the local embedder (all-MiniLM-L6-v2 int8 ONNX, 2 cores): chunks/s end to end
  (chunk, embed, write vectors and catalog), and the share of it spent embedding.
* Ingestion of the large collections with a hashing embedder (bag of hashed words, 384 dims,
  numpy): what chunking, Chroma and the catalog sustain without the model.
* Retrieval through the engine (query embedding, HNSW search, BM25 beside them, fusion, catalog
  lookup; the cache off), for hybrid (the default, adaptive fusion) and vector-only in alternating
  rounds, p50/p95/p99.

    python bench/rag.py [--sizes 10000 100000] [--queries 400] [--local-chunks 200] [--catalogs sqlite postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import pct, peak_rss_mb
from controlplane.db.engine import migrate
from rag.catalog import Catalog, SqliteCatalog
from rag.chroma import ChromaStore
from rag.embedding import Embedder, LocalEmbedder
from rag.engine import Limits, RagEngine
from schemas.model import Model
from schemas.rag import RagCollection, RagDocument
from schemas.registry import parse_object
from tests.fixtures.services import PostgresServer

README = Path(__file__).resolve().parents[1] / "README.md"


class HashEmbedder:
    """Each word adds a pseudo-random direction (seeded by its hash): texts that share words are
    near, as with a real model, at a fraction of the cost."""

    fingerprint = "bench:hashed-words-384"

    def __init__(self, dims: int = 384) -> None:
        self._dims = dims
        self._cache: dict[str, np.ndarray] = {}

    def _word(self, word: str) -> np.ndarray:
        found = self._cache.get(word)
        if found is None:
            seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
            found = self._cache[word] = np.random.default_rng(seed).standard_normal(self._dims).astype(np.float32)
        return found

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vec = np.sum([self._word(w) for w in text.lower().split()], axis=0)
            out.append((vec / (np.linalg.norm(vec) or 1.0)).tolist())
        return out


class NoCache:
    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None:
        return None


def vocabulary(rng: random.Random, size: int = 50_000) -> list[str]:
    """Made-up words; 50,000 like the working vocabulary of an English corpus (a small one makes
    every word common, and BM25 then scores most chunks for every query)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(size)})
    rng.shuffle(words)  # a word's place sets how common it is (see text()); words[0] is the most common
    return words


_WEIGHTS: dict[int, list[float]] = {}


def text(rng: random.Random, words: list[str]) -> str:
    """60-110 words drawn by Zipf's law (the k-th word is 1/k as frequent as the first), as in
    natural language: the first is ~11% of all words, like "the"; BM25's postings look like real text's."""
    cum = _WEIGHTS.get(len(words))
    if cum is None:
        cum = _WEIGHTS[len(words)] = list(itertools.accumulate(1 / (k + 1) for k in range(len(words))))
    return " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(60, 110)))


def collection(name: str, weight: float | None, revision: int = 1) -> RagCollection:
    obj = parse_object({"kind": "RagCollection", "metadata": {"name": name, "revision": revision},
                        "spec": {"collection": name, "embedding_model": "emb", "hybrid_weight": weight, "top_k": 5,
                                 "chunking": {"strategy": "chars", "size": 1000, "overlap": 0}}})  # fmt: skip
    assert isinstance(obj, RagCollection)
    return obj


LOCAL = {"provider": "local", "ollama_tag": "all-minilm", "capabilities": ["embed"], "context_window": 512}
MODEL = Model.model_validate({"kind": "Model", "metadata": {"name": "emb", "revision": 1}, "spec": LOCAL})


def engine(folder: Path, embedder: Embedder, catalog: Catalog | None = None) -> RagEngine:
    store = ChromaStore(path=folder / "chroma")
    return RagEngine(catalog=catalog or SqliteCatalog(folder / "catalog.sqlite"), store_for=lambda c: store,
                     embedder_for=lambda m: embedder, cache=NoCache(),
                     limits=Limits(batch_documents=2000, embed_batch=500))  # fmt: skip


async def ingest(eng: RagEngine, coll: RagCollection, texts: list[str], *, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        docs = [RagDocument(id=f"d{start + i}", text=t) for i, t in enumerate(texts[start : start + batch])]
        await eng.ingest(coll, MODEL, docs)
    return time.perf_counter() - started


async def local_ingest(folder: Path, count: int) -> None:
    """Real English text (this repository's README, cut into 800-character chunks as the default
    chunking does): the model's cost follows the token count, and made-up words split into many."""
    from rag.chunking import chunk_text
    from schemas.rag import Chunking

    readme = README.read_text()
    pieces = [c.text for c in chunk_text(readme, Chunking(strategy="markdown", size=800, overlap=0))]
    texts = [f"{pieces[i % len(pieces)]} ({i})" for i in range(count)]
    embedder = LocalEmbedder()
    await embedder.embed(["warm-up"])  # the model loads once per process
    started = time.perf_counter()
    await embedder.embed(texts)
    embed_s = time.perf_counter() - started
    eng = engine(folder / "local", embedder)
    elapsed = await ingest(eng, collection("localbench", 0.5), texts, batch=100)
    chars = sum(len(t) for t in texts) / len(texts)
    print(f"ingestion, local embedder: {count} chunks of ~{chars:.0f} characters: {count / elapsed:.1f} chunks/s end to end "
          f"({elapsed:.1f} s); the embedding alone {count / embed_s:.1f} chunks/s")  # fmt: skip
    eng.catalog.close()


async def measure(size: int, queries: int, folder: Path, rng: random.Random, words: list[str], catalog: str) -> None:
    embedder = HashEmbedder()
    server = None
    if catalog == "postgresql":
        from controlplane.db.engine import make_engine
        from rag.pg_catalog import PgCatalog
        from tests.fixtures.services import PostgresServer

        server = PostgresServer()
        server.start()
        db = make_engine(server.new_database())
        migrate(db)
        eng = engine(folder / f"pg{size}", embedder, PgCatalog(db))
    else:
        eng = engine(folder / f"n{size}", embedder)
    hybrid, vector_only = collection(f"bench{size}", None), collection(f"bench{size}", 1.0, revision=2)
    state = rng.getstate()  # the same chunks and queries for each catalog
    texts = [text(rng, words) for _ in range(size)]
    elapsed = await ingest(eng, hybrid, texts, batch=2000)
    print(f"\n{size:,} chunks, {catalog} catalog: ingested in {elapsed:.1f} s = {size / elapsed:,.0f} chunks/s "
          f"(hashing embedder: chunking, Chroma, catalog and keyword index)")  # fmt: skip
    if server is not None:
        vacuum(server)
    # A query: two everyday words (the most common here, like "how" or "the") and three words of the
    # chunk it is after, taken from its distinct words (content words are rarer than a chunk's average)
    asked = [" ".join(words[:2] + rng.sample(sorted(set(t.split())), 3)) for t in rng.sample(texts, queries)]
    rng.setstate(state)
    for q in asked[:20]:  # warm-up: HNSW pages, SQLite cache
        await eng.retrieve(hybrid, MODEL, q)
    times: dict[str, list[float]] = {"hybrid (vector + BM25)": [], "vector only": []}
    hits = 0
    for start in range(0, queries, 50):  # alternate the two in rounds so drift hits both alike
        for name, coll in (("hybrid (vector + BM25)", hybrid), ("vector only", vector_only)):
            for q in asked[start : start + 50]:
                t0 = time.perf_counter()
                found = await eng.retrieve(coll, MODEL, q)
                times[name].append((time.perf_counter() - t0) * 1000)
                hits += bool(found.sources)
    print(f"  retrieval (no generation), {queries} queries each, top_k 5, ms:")
    print(f"  {'':32s}{'p50':>8s}{'p95':>8s}{'p99':>8s}")
    for name, ms in times.items():
        print(f"  {name:32s}{pct(ms, 50):8.2f}{pct(ms, 95):8.2f}{pct(ms, 99):8.2f}")
    ratio = pct(times["hybrid (vector + BM25)"], 50) / pct(times["vector only"], 50)
    print(f"  hybrid / vector-only p50: x{ratio:.2f}; queries with sources: {hits}/{2 * queries}; "
          f"peak RSS {peak_rss_mb():.0f} MB")  # fmt: skip
    eng.catalog.close()
    if server is not None:
        server.close()


def vacuum(server: PostgresServer) -> None:
    """What autovacuum does soon after a bulk load: without it every index-only scan of the fresh
    postings also reads the table (the visibility map is not set yet)."""
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True) as conn:
        found = conn.execute("SELECT datname FROM pg_database WHERE datallowconn AND datname NOT IN ('postgres', 'template1')")
        for (name,) in found.fetchall():
            with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname={name}", autocommit=True) as db:
                db.execute("VACUUM ANALYZE")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--local-chunks", type=int, default=200)
    parser.add_argument("--catalogs", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    rng = random.Random(11)
    words = vocabulary(rng)
    folder = Path(tempfile.mkdtemp(prefix="bench-rag-"))
    try:
        await local_ingest(folder, args.local_chunks)
        for size in args.sizes:
            for catalog in args.catalogs:
                await measure(size, args.queries, folder, rng, words, catalog)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
