"""One contract for every VectorStore adapter: in memory, embedded Chroma, a `chroma run` server,
and Weaviate when WEAVIATE_URL names a server (skipped otherwise: none can be installed here)."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.chroma import ChromaStore
from rag.errors import VectorStoreUnavailable
from rag.store import MemoryVectorStore, Record, VectorStore
from tests.fixtures.services import ChromaServer, free_port

BACKENDS = ["memory", "chroma-embedded", "chroma-server", "weaviate"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    kind = request.param
    if kind == "memory":
        yield MemoryVectorStore()
    elif kind == "chroma-embedded":
        yield ChromaStore(path=tmp_path / "chroma")
    elif kind == "chroma-server":
        server: ChromaServer = request.getfixturevalue("chroma_server")
        yield ChromaStore(url=server.url)
    else:
        url = os.environ.get("WEAVIATE_URL")
        if not url:
            pytest.skip("WEAVIATE_URL is not set: no Weaviate server to run the contract against")
        from rag.weaviate import WeaviateStore

        weaviate = WeaviateStore(url=url)
        yield weaviate
        weaviate.close()


def unit(*xs: float) -> list[float]:
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


def name() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


def test_nearest_first_with_cosine_similarity(store: VectorStore) -> None:
    coll = name()
    assert store.ensure(coll, fingerprint="fp1") is True
    store.upsert(coll, [Record("a", unit(1, 0, 0), {"doc_id": "d1"}), Record("b", unit(0, 1, 0), {"doc_id": "d2"}),
                        Record("c", unit(1, 1, 0), {"doc_id": "d2"})])  # fmt: skip
    found = store.query(coll, unit(1, 0.1, 0), k=3)
    assert [m.id for m in found] == ["a", "c", "b"]
    assert found[0].similarity == pytest.approx(unit(1, 0.1, 0)[0], abs=1e-3)
    assert found[2].similarity == pytest.approx(unit(1, 0.1, 0)[1], abs=1e-3)
    assert store.count(coll) == 3
    assert [m.id for m in store.query(coll, unit(1, 0, 0), k=1)] == ["a"]
    store.drop(coll)


def test_upsert_replaces_and_delete_removes(store: VectorStore) -> None:
    coll = name()
    store.ensure(coll, fingerprint="fp1")
    store.upsert(coll, [Record("a", unit(1, 0), {"doc_id": "d1"}), Record("b", unit(0, 1), {"doc_id": "d1"})])
    store.upsert(coll, [Record("a", unit(0, 1), {"doc_id": "d1"})])  # same id, new vector
    assert store.count(coll) == 2
    assert store.query(coll, unit(0, 1), k=2)[0].similarity == pytest.approx(1.0, abs=1e-3)
    assert {m.id for m in store.query(coll, unit(0, 1), k=2)} == {"a", "b"}
    store.delete(coll, ["a", "missing"])
    assert [m.id for m in store.query(coll, unit(0, 1), k=5)] == ["b"]
    store.drop(coll)


def test_filters_on_metadata(store: VectorStore) -> None:
    coll = name()
    store.ensure(coll, fingerprint="fp1")
    store.upsert(coll, [
        Record("a", unit(1, 0), {"doc_id": "d1", "lang": "en", "year": 2024}),
        Record("b", unit(1, 0.2), {"doc_id": "d2", "lang": "de", "year": 2024}),
        Record("c", unit(1, 0.4), {"doc_id": "d3", "lang": "fr", "year": 2023}),
    ])  # fmt: skip
    assert [m.id for m in store.query(coll, unit(1, 0), k=5, where={"lang": "de"})] == ["b"]
    assert [m.id for m in store.query(coll, unit(1, 0), k=5, where={"lang": {"$in": ["en", "fr"]}})] == ["a", "c"]
    assert [m.id for m in store.query(coll, unit(1, 0), k=5, where={"year": 2024, "lang": "en"})] == ["a"]
    assert store.query(coll, unit(1, 0), k=5, where={"lang": "xx"}) == []
    store.drop(coll)


def test_a_new_fingerprint_empties_the_collection(store: VectorStore) -> None:
    coll = name()
    store.ensure(coll, fingerprint="model-a")
    store.upsert(coll, [Record("a", unit(1, 0), {"doc_id": "d1"})])
    assert store.ensure(coll, fingerprint="model-a") is False
    assert store.count(coll) == 1
    assert store.ensure(coll, fingerprint="model-b") is True  # vectors of another model do not mix
    assert store.count(coll) == 0
    store.drop(coll)


def test_an_unreachable_chroma_server_is_reported_as_unavailable() -> None:
    dead = ChromaStore(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(VectorStoreUnavailable, match=r"Chroma at http://127\.0\.0\.1"):
        dead.ensure("nowhere", fingerprint="fp")
