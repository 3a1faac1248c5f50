"""Retrieval quality, one run: every corpus of the evaluation harness (bench/rag_eval) ingested
through the RAG engine on both catalogs (SQLite FTS5 and PostgreSQL), and for each question the
vector side's and BM25's candidates ranked by every method side by side: vector only, BM25 only,
the fusion methods tried, and the collection's default. Figures over documents: recall@1,
recall@5, MRR and nDCG@10, for the paraphrased questions and the identifier questions apart.

    python bench/rag_quality.py [--corpus NAME ...] [--catalog sqlite|postgresql ...]

Embeddings are cached in .data/bench/embeddings.sqlite (the first run embeds ~2,300 chunks:
about two minutes on 2 cores)."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import peak_rss_mb
from bench.rag import MODEL, NoCache
from bench.rag_eval import NONE, CachedEmbedder, Corpus, Figures, corpora, doc_of, figures
from rag.catalog import Catalog, SqliteCatalog
from rag.chroma import ChromaStore
from rag.engine import Candidates, Limits, RagEngine
from rag.fusion import METHODS
from schemas.rag import RagCollection, RagDocument
from schemas.registry import parse_object

ROOT = Path(__file__).resolve().parents[1]
TOP_K = 10  # documents ranked per question; each side fetches max(4 x 10, 20) chunks, as the engine does

Method = Callable[[Candidates, str], list[str]]


def collection(name: str) -> RagCollection:
    obj = parse_object({"kind": "RagCollection", "metadata": {"name": name, "revision": 1},
                        "spec": {"collection": name, "embedding_model": "emb", "top_k": TOP_K}})  # fmt: skip
    assert isinstance(obj, RagCollection)
    return obj


async def candidates(engine: RagEngine, corpus: Corpus) -> list[Candidates]:
    coll = collection(f"eval-{corpus.name}")
    docs = [RagDocument(id=name, text=text, format="text") for name, text in corpus.documents.items()]
    for start in range(0, len(docs), 200):
        await engine.ingest(coll, MODEL, docs[start : start + 200])
    return [await engine.candidates(coll, MODEL, q.text) for q in corpus.questions]


async def agreement(engine: RagEngine, corpus: Corpus, found: list[Candidates]) -> int:
    """Questions for which the engine's own retrieval (``retrieve``, the collection's default
    ranking) returns the documents of the harness's "adaptive" ranking of the same candidates."""
    coll, same = collection(f"eval-{corpus.name}"), 0
    for cands, question in zip(found, corpus.questions, strict=True):
        got = await engine.retrieve(coll, MODEL, question.text)
        ranked = [f.id for f in METHODS["adaptive (the default)"](cands.vector, cands.keyword, question.text)][:TOP_K]
        same += [s.document_id for s in got.sources] == [doc_of(i) for i in ranked]
    return same


def table(corpus: Corpus, found: list[Candidates], methods: dict[str, Method]) -> dict[str, dict[str, Figures]]:
    out: dict[str, dict[str, Figures]] = {}
    for label, method in methods.items():
        by_kind: dict[str, Figures] = {"question": NONE, "identifier": NONE}
        for cands, question in zip(found, corpus.questions, strict=True):
            by_kind[question.kind] = by_kind[question.kind] + figures(method(cands, question.text), question.docs)
        by_kind["all"] = by_kind["question"] + by_kind["identifier"]
        out[label] = by_kind
    return out


def show(corpus: Corpus, catalog: str, rows: dict[str, dict[str, Figures]]) -> None:
    q, i = rows["vector only"]["question"].n, rows["vector only"]["identifier"].n
    print(f"\n{corpus.name} on {catalog}: {len(corpus.documents)} documents, {q} questions + {i} identifier questions")
    print(f"  {'':30s}{'questions: r@1':>15s}{'r@5':>6s}{'MRR':>6s}{'nDCG10':>7s}"
          f"{'identifiers: r@1':>18s}{'MRR':>6s}{'all: MRR':>10s}{'nDCG10':>7s}")  # fmt: skip
    for label, by_kind in rows.items():
        a, b, c = by_kind["question"], by_kind["identifier"], by_kind["all"]
        print(f"  {label:30s}{a.recall1:15.2f}{a.recall5:6.2f}{a.mrr:6.2f}{a.ndcg10:7.2f}"
              f"{b.recall1:18.2f}{b.mrr:6.2f}{c.mrr:10.2f}{c.ndcg10:7.2f}")  # fmt: skip


def methods() -> dict[str, Method]:
    out: dict[str, Method] = {
        "vector only": lambda c, q: [i for i, _ in c.vector],
        "BM25 only": lambda c, q: [i for i, _ in c.keyword],
    }
    for label, method in METHODS.items():
        out[label] = lambda c, q, m=method: [f.id for f in m(c.vector, c.keyword, q)]  # type: ignore[misc]
    return out


async def run(args: argparse.Namespace) -> None:
    embedder = CachedEmbedder(ROOT / ".data" / "bench" / "embeddings.sqlite")
    folder = Path(tempfile.mkdtemp(prefix="bench-rag-quality-"))
    server = None
    chosen = [c for c in corpora() if not args.corpus or c.name in args.corpus]
    summary: dict[str, dict[str, float]] = {}
    try:
        for backend in args.catalog:
            if backend == "postgresql":
                from controlplane.db.engine import make_engine, migrate
                from rag.pg_catalog import PgCatalog
                from tests.fixtures.services import PostgresServer

                server = PostgresServer()
                server.start()
                db = make_engine(server.new_database())
                migrate(db)
                catalog: Catalog = PgCatalog(db)
            else:
                catalog = SqliteCatalog(folder / "catalog.sqlite")
            store = ChromaStore(path=folder / f"chroma-{backend}")
            engine = RagEngine(catalog=catalog, store_for=lambda c, s=store: s, embedder_for=lambda m: embedder, cache=NoCache(),  # type: ignore[misc]
                               limits=Limits(batch_documents=2000, embed_batch=256))  # fmt: skip
            for corpus in chosen:
                started = time.perf_counter()
                found = await candidates(engine, corpus)
                rows = table(corpus, found, methods())
                show(corpus, f"{backend} ({time.perf_counter() - started:.0f} s)", rows)
                same = await agreement(engine, corpus, found)
                print(f"  the engine's retrieve() ranked as 'adaptive' for {same}/{len(found)} questions")
                for label, by_kind in rows.items():
                    summary.setdefault(label, {})[f"{corpus.name}/{backend}"] = by_kind["all"].mrr
            catalog.close()
        print("\nMRR, all questions, per corpus and catalog; the last column: the worst margin against the better single side")
        keys = list(next(iter(summary.values())))
        print(f"  {'':30s}" + "".join(f"{k:>28s}" for k in keys) + f"{'margin':>9s}")
        best = {k: max(summary["vector only"][k], summary["BM25 only"][k]) for k in keys}
        for label, by in summary.items():
            margin = min(by[k] - best[k] for k in keys)
            print(f"  {label:30s}" + "".join(f"{by[k]:28.3f}" for k in keys) + f"{margin:+9.3f}")
        print(f"\nchunks embedded this run: {embedder.computed} (the rest from the cache); peak RSS {peak_rss_mb():.0f} MB")
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", nargs="*", default=[])
    parser.add_argument("--catalog", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
