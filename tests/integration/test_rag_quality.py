"""Retrieval quality guard: the evaluation harness (bench/rag_eval) on the Python language
reference (a real corpus, 76 documents, 67 questions) and the RAG tests' corpus, ingested through
the engine with the local embedder, embedded Chroma and each catalog (SQLite FTS5, PostgreSQL).
The collection's default ranking must be at least as good as the better single side, within the
margin the issue set (MRR 0.02), for the paraphrased and the identifier questions alike; the
benchmark (bench/rag_quality.py) adds the coreutils manual and prints every method."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.rag import NoCache
from bench.rag_eval import CachedEmbedder, project, python_reference
from bench.rag_quality import agreement, candidates, collection, methods, table
from rag.catalog import Catalog
from rag.chroma import ChromaStore
from rag.engine import Limits, RagEngine

MARGIN = 0.02


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> CachedEmbedder:
    return CachedEmbedder(tmp_path_factory.mktemp("vectors") / "embeddings.sqlite")  # shared by both catalogs


async def test_the_default_ranking_is_never_worse_than_its_better_side(
    rag_catalog: Catalog, embedder: CachedEmbedder, tmp_path: Path
) -> None:
    store = ChromaStore(path=tmp_path / "chroma")
    engine = RagEngine(catalog=rag_catalog, store_for=lambda c: store, embedder_for=lambda m: embedder, cache=NoCache(),
                       limits=Limits(batch_documents=2000, embed_batch=256))  # fmt: skip
    for corpus in (python_reference(), project()):
        assert collection(f"eval-{corpus.name}").spec.hybrid_weight is None  # the default: adaptive
        found = await candidates(engine, corpus)
        rows = table(corpus, found, methods())
        vector, keyword = rows["vector only"], rows["BM25 only"]
        default, old = rows["adaptive (the default)"], rows["RRF, share 0.5 (old default)"]
        report = {name: {k: round(v.mrr, 3) for k, v in figs.items()} for name, figs in
                  (("vector", vector), ("bm25", keyword), ("default", default), ("rrf 0.5", old))}  # fmt: skip
        for kind in ("question", "identifier", "all"):
            best = max(vector[kind].mrr, keyword[kind].mrr)
            assert default[kind].mrr >= best - MARGIN, f"{corpus.name}, {kind}: {report}"
        if corpus.name == "python-reference":  # what the adaptive default was made for: fixed-share RRF lost to the vectors
            assert old["question"].mrr < vector["question"].mrr - MARGIN, report
        assert await agreement(engine, corpus, found) == len(found)  # the engine answers with that same ranking
