"""RAG pieces without services: chunking, rank fusion, filters, the
engine's write order (over the in-memory vector store), and the schema rules for local embedders."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from rag.cache import MemoryCache
from rag.catalog import SqliteCatalog
from rag.chunking import chunk_text
from rag.engine import Limits, RagEngine
from rag.errors import BadInput, DocumentTooLarge, VectorStoreUnavailable
from rag.fusion import IDENTIFIER_SHARE, PLAIN_SHARE, fuse, identifier_like, rrf, scored, vector_share
from rag.store import MemoryVectorStore, Record, check_filter
from schemas.rag import Chunking, RagCollection, RagDocument
from schemas.registry import parse_object
from schemas.validation import check_references
from tests.helpers import model_doc, rag_doc, route_doc


def test_markdown_chunks_keep_headings_with_their_text_and_respect_the_size() -> None:
    text = "# Intro\n\nShort opening.\n\n## Details\n\n" + "alpha beta gamma delta " * 60 + "\n\n## End\n\nThe last words."
    chunks = chunk_text(text, Chunking(size=300, overlap=40))
    assert all(len(c.text) <= 300 for c in chunks) and [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[1].text.startswith("## Details\n\nalpha")  # the heading did not end up alone
    assert chunks[-1].text.endswith("The last words.")
    assert chunk_text("   \n ", Chunking()) == []


def test_word_and_character_chunks_overlap() -> None:
    words = " ".join(f"w{i}" for i in range(130))
    parts = [c.text.split() for c in chunk_text(words, Chunking(strategy="tokens", size=50, overlap=10))]
    assert [(p[0], p[-1]) for p in parts] == [("w0", "w49"), ("w40", "w89"), ("w80", "w129")]
    chars = chunk_text("abcdefghij" * 45, Chunking(strategy="chars", size=200, overlap=50))
    assert [len(c.text) for c in chars] == [200, 200, 150] and chars[1].text[:50] == chars[0].text[-50:]


def test_rank_fusion_weights_and_ties() -> None:
    vector = [("a", 0.91), ("b", 0.90), ("c", 0.2)]
    keyword = [("b", 12.0), ("a", 1.0)]
    fused = rrf(vector, keyword, weight=0.5)
    # a and b tie on ranks (1st and 2nd each): b's keyword lead is wider than a's vector lead
    assert [f.id for f in fused] == ["b", "a", "c"] and fused[0].score == pytest.approx(fused[1].score)
    assert fused[0].keyword_rank == 1 and fused[0].similarity == 0.90
    assert [f.id for f in rrf(vector, keyword, weight=1.0)] == ["a", "b", "c"]  # vector only
    assert [f.id for f in rrf(vector, keyword, weight=0.0)] == ["b", "a"]  # keyword only
    assert rrf([("x", 0.5)], [("x", 3.0)], weight=0.3)[0].score == pytest.approx(1.0)


def test_score_fusion_and_the_adaptive_share() -> None:
    vector = [("a", 0.91), ("b", 0.90), ("c", 0.2)]
    keyword = [("b", 12.0), ("a", 1.0)]
    fused = scored(vector, keyword, weight=0.5)  # a: 0.5 * 1 + 0; b: 0.5 * 0.986 + 0.5 * 1
    assert [f.id for f in fused] == ["b", "a", "c"] and fused[0].score == pytest.approx(0.993, abs=1e-3)
    assert fused[0].keyword_rank == 1 and fused[0].similarity == 0.90 and fused[2].keyword_rank is None
    only_vector = scored(vector, keyword, weight=1.0)
    assert [f.id for f in only_vector] == ["a", "b", "c"] and only_vector[0].keyword_rank is None
    only_keyword = scored(vector, keyword, weight=0.0)
    assert [f.id for f in only_keyword] == ["b", "a"] and only_keyword[0].similarity is None
    assert scored([("x", 0.5)], [("x", 3.0)], weight=0.3)[0].score == pytest.approx(1.0)  # a list of one scales to 1
    assert scored([], [], weight=0.5) == []

    assert vector_share("How do I keep the previous version of a file?") == pytest.approx(PLAIN_SHARE)
    for name in ("--kill-after", "TIME_STYLE", "str.removeprefix", "ERR-4471", "__slots__", "ed25519", "getAttr", "len()"):
        assert identifier_like(name) and vector_share(name) == pytest.approx(IDENTIFIER_SHARE), name
    for word in ("file's", "Hello", "don't", "(see", "e.g.", "5", "well-known"):
        assert not identifier_like(word.strip("?!,.;:'\"")), word
    mixed = vector_share("what does env --split-string do")  # one word in five
    assert mixed == pytest.approx(PLAIN_SHARE - (PLAIN_SHARE - IDENTIFIER_SHARE) / 5)
    quoted = vector_share('where is "exact phrase" mentioned')  # two words of five
    assert quoted == pytest.approx(PLAIN_SHARE - (PLAIN_SHARE - IDENTIFIER_SHARE) * 2 / 5)
    assert vector_share("?? !!") == PLAIN_SHARE and vector_share("x" * 20_000 + "1") == pytest.approx(IDENTIFIER_SHARE)
    # the collection's hybrid_weight overrides the query's share
    assert [f.id for f in fuse(vector, keyword, query="ERR-4471", weight=1.0)] == ["a", "b", "c"]
    adaptive, keywords = fuse(vector, keyword, query="ERR-4471", weight=None), scored(vector, keyword, weight=IDENTIFIER_SHARE)
    assert [(f.id, round(f.score, 9)) for f in adaptive] == [(f.id, round(f.score, 9)) for f in keywords]


def test_filters_are_checked() -> None:
    assert check_filter({"lang": "en", "year": {"$in": [2023, 2024]}}) is not None
    for bad, why in [([1], "must be an object"), ({"a": {"$gt": 1}}, "only operator"), ({"a": [1]}, "string, number"),
                     ({"_doc": "x"}, "a metadata field name"), ({"$and": [{"a": 1}]}, "'$and' are not supported"),
                     ({"a": {"$in": []}}, "at least one")]:  # fmt: skip
        with pytest.raises(BadInput, match=re.escape(why)):
            check_filter(bad)


class Words:
    """A toy embedder: one dimension per known word."""

    VOCAB = ["quota", "error", "backup", "night", "coffee", "parking"]

    def __init__(self, fingerprint: str = "words-v1") -> None:
        self.fingerprint, self.calls = fingerprint, 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[float(w in t.lower()) + 0.01 for w in self.VOCAB] for t in texts]


class BrokenStore(MemoryVectorStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def upsert(self, collection: str, records: Sequence[Record]) -> None:
        super().upsert(collection, records)
        if self.fail:
            raise VectorStoreUnavailable("disk full")


def engine(tmp_path: Path, store: MemoryVectorStore, embedder: Words) -> RagEngine:
    return RagEngine(catalog=SqliteCatalog(tmp_path / "c.sqlite"), store_for=lambda c: store, embedder_for=lambda m: embedder,
                     cache=MemoryCache(), limits=Limits(document_bytes=2000, batch_documents=3))  # fmt: skip


COLLECTION = parse_object(rag_doc("kb1", "emb", hybrid_weight=1.0))
MODEL = parse_object(model_doc("emb", tag="nomic-embed-text", caps=["embed"], ctx=8192))
assert isinstance(COLLECTION, RagCollection)


def test_engine_write_order_reindex_and_limits(tmp_path: Path) -> None:
    store, words = BrokenStore(), Words()
    eng = engine(tmp_path, store, words)
    docs = [RagDocument(id="q", text="quota error"), RagDocument(id="b", text="nightly backup")]
    asyncio.run(eng.ingest(COLLECTION, MODEL, docs))  # type: ignore[arg-type]
    assert store.count("kb1") == 2
    store.fail = True  # the vectors are written, then the store fails: they are taken back, the catalog is untouched
    with pytest.raises(VectorStoreUnavailable):
        asyncio.run(eng.ingest(COLLECTION, MODEL, [RagDocument(id="c", text="coffee")]))  # type: ignore[arg-type]
    store.fail = False
    assert store.count("kb1") == 2 and eng.catalog.hashes("kb1", ["c"]) == {}
    found = asyncio.run(eng.retrieve(COLLECTION, MODEL, "quota"))  # type: ignore[arg-type]
    assert found.sources[0].document_id == "q"

    moved = Words("words-v2")  # another embedding model: everything is re-embedded before the next write
    eng2 = RagEngine(catalog=eng.catalog, store_for=lambda c: store, embedder_for=lambda m: moved, cache=MemoryCache(),
                     limits=Limits())  # fmt: skip
    result = asyncio.run(eng2.ingest(COLLECTION, MODEL, [RagDocument(id="p", text="parking")]))  # type: ignore[arg-type]
    assert result.reindexed == 2 and store.count("kb1") == 3 and moved.calls == 2

    with pytest.raises(DocumentTooLarge, match="limit is 3"):
        asyncio.run(eng.ingest(COLLECTION, MODEL, [RagDocument(id=str(i), text="x") for i in range(4)]))  # type: ignore[arg-type]
    with pytest.raises(DocumentTooLarge, match="split it"):
        asyncio.run(eng.ingest(COLLECTION, MODEL, [RagDocument(id="big", text="x" * 3000)]))  # type: ignore[arg-type]


def test_local_embedders_are_embedding_models_no_route_may_target() -> None:
    spec = {"provider": "local", "ollama_tag": "all-minilm:22m", "capabilities": ["embed"], "context_window": 512}
    local = {"kind": "Model", "metadata": {"name": "mini"}, "spec": spec}
    parse_object(local)
    with pytest.raises(ValidationError, match="embedding models only"):
        parse_object({**local, "spec": {**spec, "capabilities": ["chat"]}})
    with pytest.raises(ValidationError, match="has no model 'bge-m3'"):
        parse_object({**local, "spec": {**spec, "ollama_tag": "bge-m3"}})
    objects = [parse_object(local), parse_object(route_doc("r", "mini"))]
    problems = check_references({(o.plural, o.name): o for o in objects})
    assert any("runs inside the RAG engine" in p.message for p in problems)
