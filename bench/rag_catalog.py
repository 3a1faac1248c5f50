"""The RAG catalog's keyword side on SQLite (FTS5, BM25) against PostgreSQL (full-text search,
BM25 computed from the catalog's document frequencies), in one run:

* quality on the test corpus (tests/integration/rag_corpus.py, chunked as the RAG tests chunk it):
  keyword-only recall@1, recall@3 and MRR for the exact-code queries and the paraphrased questions;
* keyword retrieval latency (``keyword`` + ``chunks``: what the catalog adds to a query; the vector
  side is the same for both) at 10,000 and 100,000 chunks, p50/p99, in alternating rounds, and
  ingestion throughput of the catalog alone;
* each catalog's pruning (``PRUNE_ROWS``) against its unpruned search: latency and agreement.

    python bench/rag_catalog.py [--sizes 10000 100000] [--queries 400]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rag.catalog
import rag.pg_catalog
from bench.common import pct
from bench.rag import text, vacuum, vocabulary
from controlplane.db.engine import make_engine, migrate
from rag.catalog import Catalog, SqliteCatalog, StoredChunk, StoredDocument
from rag.chunking import chunk_text
from rag.pg_catalog import PgCatalog
from schemas.rag import Chunking
from tests.fixtures.services import PostgresServer
from tests.integration.rag_corpus import CODES, DOCS, QUESTIONS


def corpus_docs() -> list[StoredDocument]:
    out = []
    for doc_id, body in DOCS.items():
        chunks = [StoredChunk(f"{doc_id}#{c.index}", doc_id, c.index, c.text, {}) for c in
                  chunk_text(body, Chunking(size=400, overlap=50))]  # fmt: skip
        out.append(StoredDocument(doc_id, "h", len(body), {}, chunks))
    return out


def quality(cat: Catalog, queries: dict[str, str]) -> tuple[float, float, float]:
    """recall@1, recall@3 and MRR (over the top 10) of keyword search alone."""
    at1 = at3 = rr = 0.0
    for query, expected in queries.items():
        held = cat.chunks("corpus", [i for i, _ in cat.keyword("corpus", query, k=10)])
        docs = list(dict.fromkeys(held[i].doc_id for i, _ in cat.keyword("corpus", query, k=10) if i in held))
        at1 += docs[:1] == [expected]
        at3 += expected in docs[:3]
        rr += 1 / (docs.index(expected) + 1) if expected in docs else 0.0
    n = len(queries)
    return at1 / n, at3 / n, rr / n


def ingest(cat: Catalog, name: str, texts: list[str], *, batch: int = 2000) -> float:
    started = time.perf_counter()
    cat.set_fingerprint(name, "bench")
    for start in range(0, len(texts), batch):
        ids = [f"d{start + i}" for i in range(len(texts[start : start + batch]))]
        cat.replace(name, [StoredDocument(d, "h", len(t), {}, [StoredChunk(f"{d}#0", d, 0, t, {})])
                           for d, t in zip(ids, texts[start : start + batch], strict=True)])  # fmt: skip
    return time.perf_counter() - started


def pruning(catalogs: dict[str, Catalog], name: str, asked: list[str]) -> None:
    """Each catalog's keyword search as it runs (pruned above PRUNE_ROWS matching chunks) against
    the same search unpruned, in alternating rounds: latency, and how often the top 20 are the same
    chunks with the same scores (and the same first chunk)."""
    print(f"  pruned (as it runs) against unpruned (PRUNE_ROWS = {rag.catalog.PRUNE_ROWS:,}), top 20, ms:")
    print(f"  {'':14s}{'unpruned p50':>13s}{'p99':>8s}{'pruned p50':>12s}{'p99':>8s}{'same top 20':>13s}{'same first':>12s}")
    for label, cat in catalogs.items():
        module = rag.catalog if isinstance(cat, SqliteCatalog) else rag.pg_catalog
        prune_rows: int = getattr(module, "PRUNE_ROWS")  # noqa: B009 (set below; mypy sees a union of modules)
        times: dict[str, list[float]] = {"full": [], "pruned": []}
        found: dict[str, list[list[tuple[str, float]]]] = {"full": [], "pruned": []}
        for start in range(0, len(asked), 50):
            for mode in ("full", "pruned"):
                setattr(module, "PRUNE_ROWS", 10**12 if mode == "full" else prune_rows)  # noqa: B010
                for q in asked[start : start + 50]:
                    t0 = time.perf_counter()
                    found[mode].append(cat.keyword(name, q, k=20))
                    times[mode].append((time.perf_counter() - t0) * 1000)
        setattr(module, "PRUNE_ROWS", prune_rows)  # noqa: B010
        pairs = list(zip(found["full"], found["pruned"], strict=True))
        same = sum([round(s, 6) for _, s in a] == [round(s, 6) for _, s in b] for a, b in pairs)
        first = sum([i for i, _ in a[:1]] == [i for i, _ in b[:1]] for a, b in pairs)
        print(f"  {label:14s}{pct(times['full'], 50):13.2f}{pct(times['full'], 99):8.2f}{pct(times['pruned'], 50):12.2f}"
              f"{pct(times['pruned'], 99):8.2f}{same:>9d}/{len(asked)}{first:>8d}/{len(asked)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    server = PostgresServer()
    server.start()
    try:
        catalogs: dict[str, Catalog] = {"SQLite FTS5": SqliteCatalog(folder / "catalog.sqlite")}
        engine = make_engine(server.new_database())
        migrate(engine)
        catalogs["PostgreSQL"] = PgCatalog(engine)

        print("keyword-only quality on the RAG test corpus (14 documents):")
        print(f"  {'':14s}{'codes r@1':>10s}{'r@3':>6s}{'MRR':>6s}{'questions r@1':>15s}{'r@3':>6s}{'MRR':>6s}")
        for name, cat in catalogs.items():
            cat.set_fingerprint("corpus", "bench")
            cat.replace("corpus", corpus_docs())
            c1, c3, cm = quality(cat, CODES)
            q1, q3, qm = quality(cat, QUESTIONS)
            print(f"  {name:14s}{c1:10.2f}{c3:6.2f}{cm:6.2f}{q1:15.2f}{q3:6.2f}{qm:6.2f}")

        rng = random.Random(11)
        words = vocabulary(rng)
        for size in args.sizes:
            texts = [text(rng, words) for _ in range(size)]
            name = f"bench{size}"
            print(f"\n{size:,} chunks:")
            for label, cat in catalogs.items():
                elapsed = ingest(cat, name, texts)
                print(f"  {label:14s} ingested in {elapsed:6.1f} s = {size / elapsed:7,.0f} chunks/s (catalog and keyword index)")
            vacuum(server)
            asked = [" ".join(words[:2] + rng.sample(sorted(set(t.split())), 3)) for t in rng.sample(texts, args.queries)]
            for cat in catalogs.values():
                for q in asked[:20]:
                    cat.keyword(name, q, k=20)  # warm-up
            times: dict[str, list[float]] = {label: [] for label in catalogs}
            agree = 0
            for start in range(0, args.queries, 50):  # alternate in rounds so drift hits both alike
                tops: dict[str, list[str | None]] = {}
                for label, cat in catalogs.items():
                    for q in asked[start : start + 50]:
                        t0 = time.perf_counter()
                        found = cat.keyword(name, q, k=20)
                        cat.chunks(name, [i for i, _ in found])
                        times[label].append((time.perf_counter() - t0) * 1000)
                        tops.setdefault(q, []).append(found[0][0] if found else None)
                agree += sum(len(set(v)) == 1 for v in tops.values())
            print(f"  keyword retrieval, {args.queries} queries (2 common words + 3 of the chunk's), top 20, ms:")
            print(f"  {'':14s}{'p50':>8s}{'p99':>8s}")
            for label, ms in times.items():
                print(f"  {label:14s}{pct(ms, 50):8.2f}{pct(ms, 99):8.2f}")
            ratio = pct(times["PostgreSQL"], 50) / pct(times["SQLite FTS5"], 50)
            print(f"  PostgreSQL / SQLite p50: x{ratio:.2f}; same best chunk in {agree}/{args.queries} queries")
            pruning(catalogs, name, asked)
        for cat in catalogs.values():
            cat.close()
        engine.dispose()
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
