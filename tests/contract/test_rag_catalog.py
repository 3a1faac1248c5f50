"""The catalog's contract, on SQLite (FTS5, a file beside the embedded vectors) and on PostgreSQL
(full-text search with BM25 over the metadata database that replicas share): ranking, filters,
common words, collections kept apart, and the generation that cache keys carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.db.engine import make_engine, migrate
from rag.catalog import Catalog, SqliteCatalog, StoredChunk, StoredDocument
from rag.pg_catalog import PgCatalog
from tests.fixtures.services import PostgresServer


@pytest.fixture
def catalog(rag_catalog: Catalog) -> Catalog:
    return rag_catalog


def test_keyword_index_ranks_by_bm25_and_filters(catalog: Catalog) -> None:
    cat = catalog
    docs = [("d1", "The ERR-4471 quota error", "en"), ("d2", "A quota warning, ERR-4417", "en"), ("d3", "Quota erreicht", "de")]
    cat.set_fingerprint("coll", "fp")
    cat.replace("coll", [StoredDocument(i, "h", 1, {"lang": lang}, [StoredChunk(f"{i}#0", i, 0, t, {"lang": lang})])
                         for i, t, lang in docs])  # fmt: skip
    assert cat.keyword("coll", "what is ERR-4471?", k=5)[0][0] == "d1#0"
    assert {i for i, _ in cat.keyword("coll", "quota", k=5, where={"lang": "de"})} == {"d3#0"}
    assert {i for i, _ in cat.keyword("coll", "quota", k=5, where={"lang": {"$in": ["en"]}})} == {"d1#0", "d2#0"}
    assert cat.keyword("coll", "?!", k=5) == [] and cat.keyword("other", "quota", k=5) == []
    generation = cat.generation("coll")
    assert cat.remove("coll", ["d2"]) == ["d2#0"] and cat.generation("coll") == generation + 1
    assert [i for i, _ in cat.keyword("coll", "ERR-4417", k=5)] == ["d1#0"]  # "err" still matches d1


def test_keyword_search_skips_words_in_most_chunks_and_keeps_collections_apart(catalog: Catalog) -> None:
    cat = catalog
    texts = [f"the common text {'rare ' if i % 400 == 0 else ''}{i}" for i in range(1200)]
    docs = [StoredDocument(f"d{i}", "h", 1, {}, [StoredChunk(f"d{i}#0", f"d{i}", 0, t, {})]) for i, t in enumerate(texts)]
    cat.replace("big", docs)
    assert {i for i, _ in cat.keyword("big", "the rare", k=10)} == {"d0#0", "d400#0", "d800#0"}
    assert cat.keyword("big", "the common", k=10) == []  # in every chunk: BM25 has nothing to rank by
    cat.replace("small", [StoredDocument("s", "h", 1, {}, [StoredChunk("s#0", "s", 0, "the common words", {})])])
    assert [i for i, _ in cat.keyword("small", "common", k=10)] == ["s#0"]  # its own statistics, not big's
    cat.drop("big")
    assert cat.keyword("big", "rare", k=10) == [] and cat.keyword("small", "common", k=10)


def _doc(doc_id: str, *texts: str, hash_: str = "h1", **meta: str | int) -> StoredDocument:
    chunks = [StoredChunk(f"{doc_id}#{i}", doc_id, i, t, dict(meta)) for i, t in enumerate(texts)]
    return StoredDocument(doc_id, hash_, sum(len(t) for t in texts), dict(meta), chunks)


def test_documents_are_replaced_whole_listed_and_forgotten(catalog: Catalog) -> None:
    cat = catalog
    assert cat.fingerprint("c") is None and cat.generation("c") == 0
    cat.set_fingerprint("c", "fp-1")
    assert cat.fingerprint("c") == "fp-1"
    assert cat.replace("c", [_doc("a", "apples grow on trees", "pears too", team="x"), _doc("b", "boats float")]) == []
    assert cat.hashes("c", ["a", "b", "z"]) == {"a": "h1", "b": "h1"} and cat.chunk_count("c") == 3
    # a new version replaces every chunk of the old one: the old chunks' ids come back (their vectors go)
    assert sorted(cat.replace("c", [_doc("a", "oranges now", hash_="h2", team="y")])) == ["a#0", "a#1"]
    assert cat.hashes("c", ["a"]) == {"a": "h2"} and cat.chunk_count("c") == 2
    assert cat.keyword("c", "apples pears", k=5) == []  # the old words left the index with their chunks
    assert [i for i, _ in cat.keyword("c", "oranges", k=5)] == ["a#0"]
    held = cat.chunks("c", ["a#0", "a#1", "b#0"])
    assert sorted(held) == ["a#0", "b#0"] and held["a#0"].metadata == {"team": "y"} and held["a#0"].text == "oranges now"
    listed, total = cat.documents("c", limit=1)
    assert total == 2 and [d.id for d in listed] == ["a"] and listed[0].metadata == {"team": "y"} and listed[0].chunks == 1
    assert [d.id for d in cat.documents("c", offset=1)[0]] == ["b"]
    assert [[c.id for c in batch] for batch in cat.all_chunks("c", batch=1)] == [["a#0"], ["b#0"]]
    before = cat.generation("c")
    assert cat.remove("c", ["b", "missing"]) == ["b#0"] and cat.generation("c") > before
    assert cat.keyword("c", "boats", k=5) == [] and cat.chunk_count("c") == 1
    cat.drop("c")
    assert cat.chunk_count("c") == 0 and cat.fingerprint("c") is None and cat.documents("c") == ([], 0)


def test_numbers_and_booleans_filter_by_value(catalog: Catalog) -> None:
    cat = catalog
    cat.set_fingerprint("c", "fp")
    cat.replace("c", [_doc("one", "shared words", year=2024), _doc("two", "shared words", year=2025)])
    assert [i for i, _ in cat.keyword("c", "shared", k=5, where={"year": 2025})] == ["two#0"]
    assert sorted(i for i, _ in cat.keyword("c", "shared", k=5, where={"year": {"$in": [2024, 2025]}})) == ["one#0", "two#0"]
    assert cat.keyword("c", "shared", k=5, where={"year": "2025"}) == []  # a string is not the number


def test_two_replicas_ingesting_into_one_collection_take_turns(postgres_server: PostgresServer) -> None:
    """Two catalogs (two replicas' engines) on one database, writing the same collection from many
    threads at once: no deadlock, and the figures BM25 needs add up."""
    from concurrent.futures import ThreadPoolExecutor

    url = postgres_server.new_database()
    engines = [make_engine(url), make_engine(url)]
    migrate(engines[0])
    replicas = [PgCatalog(e) for e in engines]
    replicas[0].set_fingerprint("c", "fp")

    def ingest(i: int) -> None:
        replicas[i % 2].replace("c", [_doc(f"d{i}-{j}", f"common words and a rare{i} one", "more words") for j in range(5)])
        replicas[(i + 1) % 2].replace("c", [_doc(f"d{i}-0", f"common words, rewritten rare{i}")])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(ingest, range(24)))
    assert replicas[1].chunk_count("c") == 24 * 9  # 4 documents of 2 chunks and 1 rewritten of 1 chunk each
    assert [i for i, _ in replicas[1].keyword("c", "rewritten rare7", k=1)] == ["d7-0#0"]
    with engines[0].connect() as conn:
        from sqlalchemy import text

        chunks, df = conn.execute(text(
            "SELECT chunks, (SELECT df FROM rag_terms WHERE collection = 'c' AND lexeme = 'rewritten') "
            "FROM rag_collections WHERE name = 'c'"
        )).one()  # fmt: skip
    assert (chunks, df) == (24 * 9, 24)
    for e in engines:
        e.dispose()


def test_a_control_plane_moving_to_postgresql_brings_its_sqlite_catalog_once(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    from controlplane.services.rag import open_catalog
    from controlplane.settings import RagSettings

    settings = RagSettings(data_dir=tmp_path / "rag")
    old = SqliteCatalog(settings.data_dir / "catalog.sqlite")
    old.set_fingerprint("c", "ollama:nomic|chroma|embedded|c")
    old.replace("c", [_doc("a", "apples grow on trees", "pears too", team="x"), _doc("b", "boats float")])
    old.close()
    engine = make_engine(postgres_server.new_database())
    migrate(engine)
    moved = open_catalog(settings, engine)
    assert isinstance(moved, PgCatalog)
    assert moved.fingerprint("c") == "ollama:nomic|chroma|embedded|c"  # its vectors are where they were: no re-embedding
    assert moved.hashes("c", ["a", "b"]) == {"a": "h1", "b": "h1"} and moved.chunk_count("c") == 3
    assert [i for i, _ in moved.keyword("c", "pears", k=5)] == ["a#1"]
    assert moved.documents("c")[0][0].metadata == {"team": "x"}
    assert not (settings.data_dir / "catalog.sqlite").exists() and (settings.data_dir / "catalog.sqlite.imported").exists()
    assert open_catalog(settings, engine).chunk_count("c") == 3  # once: nothing to import the second time
    engine.dispose()


def test_pruned_keyword_search_gives_the_full_ranking(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``PRUNE_ROWS`` matching chunks the rarest words choose the candidates and every word
    scores them (exactly, proven by the common words' bound), else the chunks holding every common
    word are scored too. Here the bound is lowered so that a 3,000-chunk collection prunes."""
    import random

    import rag.catalog
    import rag.pg_catalog
    from bench.rag import text, vocabulary

    rng = random.Random(5)
    words = vocabulary(rng, size=3000)
    texts = [text(rng, words) for _ in range(3000)]
    cat = catalog
    cat.set_fingerprint("zipf", "fp")
    for start in range(0, len(texts), 1000):
        cat.replace("zipf", [StoredDocument(f"d{i}", "h", 1, {}, [StoredChunk(f"d{i}#0", f"d{i}", 0, texts[i], {})])
                             for i in range(start, start + 1000)])  # fmt: skip
    queries = [" ".join(rng.sample(sorted(set(t.split())), 3)) for t in rng.sample(texts, 60)]
    full = [[round(s, 6) for _, s in cat.keyword("zipf", q, k=20)] for q in queries]
    monkeypatch.setattr(rag.catalog, "PRUNE_ROWS", 300)
    monkeypatch.setattr(rag.pg_catalog, "PRUNE_ROWS", 300)
    pruned = [[round(s, 6) for _, s in cat.keyword("zipf", q, k=20)] for q in queries]
    same = sum(a == b for a, b in zip(full, pruned, strict=True))
    # the one approximation (chunks holding some but not all common words, when the bound proves nothing)
    assert same >= len(queries) - 3, f"{same}/{len(queries)}"
    assert all(a[:1] == b[:1] for a, b in zip(full, pruned, strict=True))
