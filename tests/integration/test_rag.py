"""RAG end to end: etcd, the control plane's RAG API, an agent on a simulated node, the router
(embeddings from the fleet, answers through a route), embedded Chroma, a `chroma run` server and
Redis; the local MiniLM embedder for the recall and hybrid measurements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from controlplane.store.keys import KeySpace
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import ChromaServer, EtcdServer, RedisServer
from tests.helpers import model_doc, rag_doc, route_doc
from tests.integration.rag_corpus import CODES, DOCS, QUESTIONS
from tests.sim.engine import Fault

pytestmark = pytest.mark.etcd

CONFIG = [
    model_doc("small", tag="llama3.2:1b", ctx=8192),
    model_doc("embedder", tag="nomic-embed-text", caps=["embed"], ctx=8192),
    {"kind": "Model", "metadata": {"name": "minilm"},
     "spec": {"provider": "local", "ollama_tag": "all-minilm:22m", "capabilities": ["embed"], "context_window": 512}},
    route_doc("answers", "small", match={"model_aliases": ["answers"]}),
    rag_doc("handbook", "minilm", generation_route="answers", chunking={"size": 400, "overlap": 50}),
    rag_doc("fleetdocs", "embedder", generation_route="answers"),
]  # fmt: skip
RECALL_FLOOR = 0.9  # 10 paraphrased questions over 14 documents: MiniLM finds all 10 here; random vectors ~0.36


async def _fleet(etcd: EtcdServer, keys: KeySpace, tmp_path: Path, db_url: str | None = None, **rag: Any) -> Fleet:
    f = Fleet(etcd.url, keys, tmp_path)
    await f.start_control_plane(rag=rag, db_url=db_url)
    await f.add_node("node-0")
    resp = await f.api.post("/api/v1/config:apply", json={"objects": CONFIG})
    assert resp.status_code == 200, resp.text

    async def ready() -> bool:
        models = (await f.api.get("/api/v1/models/status")).json()["models"]
        return all(m["ready_nodes"] == m["desired_nodes"] for m in models) and len(models) == 3

    await f.eventually(ready, timeout_s=15)
    url = await f.start_router()

    async def routable() -> bool:
        async with httpx.AsyncClient(base_url=url) as c:
            return len((await c.get("/api/tags")).json()["models"]) == 2

    await f.eventually(routable, timeout_s=10)
    return f


@pytest.fixture(params=["sqlite", "postgres"])
async def fleet(request: pytest.FixtureRequest, etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[Fleet]:
    """The catalog in SQLite (FTS5), then in PostgreSQL (the metadata database; BM25 over full-text search)."""
    db_url = request.getfixturevalue("postgres_server").new_database() if request.param == "postgres" else None
    f = await _fleet(etcd_server, keys, tmp_path, db_url, embed_batch=4)
    yield f
    await f.close()


def docs(names: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    chosen = names or list(DOCS)
    return {"documents": [{"id": n, "text": DOCS[n], "format": "markdown", **extra} for n in chosen]}


async def ingest(f: Fleet, collection: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await f.api.post(f"/api/v1/rag/collections/{collection}/documents", json=body)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def query(f: Fleet, **body: Any) -> dict[str, Any]:
    resp = await f.api.post("/api/v1/rag/query", json=body)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def test_ingest_retrieve_and_answer_through_the_router(fleet: Fleet) -> None:
    async with fleet.api.stream("POST", "/api/v1/rag/collections/handbook/documents?progress=true", json=docs()) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [orjson.loads(line) async for line in resp.aiter_lines() if line.strip()]
    progress, result = [x for x in lines if x["type"] == "progress"], lines[-1]
    assert progress and progress[-1]["embedded"] == progress[-1]["total"] == result["chunks"] >= len(DOCS)
    assert result["type"] == "result" and sorted(result["ingested"]) == sorted(DOCS) and result["unchanged"] == []

    found = 0
    for question, expected in QUESTIONS.items():
        got = await query(fleet, collection="handbook", query=question, retrieve_only=True)
        assert got["answer"] is None and len(got["sources"]) == 5 and got["timings"]["generate_ms"] == 0
        found += expected in {s["document_id"] for s in got["sources"]}
    assert found / len(QUESTIONS) >= RECALL_FLOOR, f"recall@5 {found}/{len(QUESTIONS)}"

    answered = await query(fleet, collection="handbook", query="How long are database backups kept?", top_k=3)
    assert answered["answer"] and answered["model"] == "small" and answered["node"] == "node-0"
    assert [s["n"] for s in answered["sources"]] == [1, 2, 3] and answered["sources"][0]["document_id"] == "backups"
    assert answered["timings"]["generate_ms"] > 0 and answered["timings"]["total_ms"] >= answered["timings"]["generate_ms"]
    assert any(c[1] == "/api/chat" and c[2] == "llama3.2:1b" for c in fleet.sims["node-0"].engine.calls)

    async with fleet.api.stream("POST", "/api/v1/rag/query", json={"collection": "handbook", "query": "parking spaces",
                                                                    "stream": True}) as resp:  # fmt: skip
        assert resp.status_code == 200
        lines = [orjson.loads(line) async for line in resp.aiter_lines() if line.strip()]
    assert lines[0]["type"] == "sources" and lines[0]["sources"][0]["document_id"] == "parking" and lines[0]["model"] == "small"
    assert [x["type"] for x in lines[1:-1]] == ["delta"] * (len(lines) - 2) and len(lines) > 3
    assert lines[-1]["type"] == "done" and lines[-1]["timings"]["generate_ms"] > 0


async def test_reingest_is_idempotent_delete_and_list(fleet: Fleet) -> None:
    first = await ingest(fleet, "fleetdocs", docs(["backups", "gpu", "parking"]))
    assert sorted(first["ingested"]) == ["backups", "gpu", "parking"] and first["chunks"] == 3
    embeds = embed_calls(fleet)
    again = await ingest(fleet, "fleetdocs", docs(["backups", "gpu", "parking"]))
    assert again["ingested"] == [] and sorted(again["unchanged"]) == ["backups", "gpu", "parking"] and again["chunks"] == 0
    assert embed_calls(fleet) == embeds  # no work at all

    changed = {"documents": [{"id": "gpu", "text": DOCS["gpu"] + " Jobs longer than a day need approval."}]}
    assert (await ingest(fleet, "fleetdocs", changed))["ingested"] == ["gpu"]
    listing = (await fleet.api.get("/api/v1/rag/collections/fleetdocs/documents")).json()
    assert listing["total"] == 3 and [d["id"] for d in listing["documents"]] == ["backups", "gpu", "parking"]
    got = await query(fleet, collection="fleetdocs", query="approval for jobs longer than a day", retrieve_only=True)
    assert got["sources"][0]["document_id"] == "gpu" and "approval" in got["sources"][0]["snippet"]

    assert (await fleet.api.delete("/api/v1/rag/collections/fleetdocs/documents/gpu")).status_code == 200
    gone = await fleet.api.delete("/api/v1/rag/collections/fleetdocs/documents/gpu")
    assert gone.status_code == 404 and "holds no document 'gpu'" in gone.json()["detail"]
    got = await query(fleet, collection="fleetdocs", query="approval for jobs longer than a day", retrieve_only=True)
    assert "gpu" not in {s["document_id"] for s in got["sources"]}
    assert (await fleet.api.get("/api/v1/rag/collections/fleetdocs/documents")).json()["total"] == 2


async def test_hybrid_beats_vector_only_on_exact_keywords(fleet: Fleet) -> None:
    await ingest(fleet, "handbook", docs())

    async def top1(weight: float | None) -> int:
        objects = [rag_doc("handbook", "minilm", generation_route="answers", chunking={"size": 400, "overlap": 50},
                           hybrid_weight=weight)]  # fmt: skip
        assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
        await fleet.eventually(lambda: _weight_is(fleet, weight))
        hits = 0
        for code, expected in CODES.items():
            got = await query(fleet, collection="handbook", query=f"What does {code} mean?", retrieve_only=True)
            hits += got["sources"][0]["document_id"] == expected
        return hits

    vector_only, hybrid, keyword_only, adaptive = await top1(1.0), await top1(0.5), await top1(0.0), await top1(None)
    assert keyword_only == len(CODES) and adaptive == len(CODES)  # the default leans on BM25 for a code
    assert hybrid > vector_only, f"hybrid {hybrid}/4, vector only {vector_only}/4"


async def _weight_is(f: Fleet, weight: float | None) -> bool:
    got = (await f.api.get("/api/v1/config/rag/handbook")).json()
    return bool(got["spec"].get("hybrid_weight") == weight)


async def test_embedding_model_change_reindexes_and_config_change_invalidates_cache(fleet: Fleet) -> None:
    await ingest(fleet, "fleetdocs", docs(["backups", "gpu", "parking", "kitchen"]))
    # The simulator's vectors are bags of words: a query that shares many words with its document.
    words = "dishes go into the dishwasher which runs at 18:00"
    first = await query(fleet, collection="fleetdocs", query=words, retrieve_only=True)
    assert first["cached"] is False and first["sources"][0]["document_id"] == "kitchen"
    assert (await query(fleet, collection="fleetdocs", query=words, retrieve_only=True))["cached"] is True

    changed = [rag_doc("fleetdocs", "embedder", generation_route="answers", top_k=2)]  # a new revision: new cache keys
    assert (await fleet.api.post("/api/v1/config:apply", json={"objects": changed})).status_code == 200
    await _until_spec(fleet, "top_k", 2)
    after = await query(fleet, collection="fleetdocs", query=words, retrieve_only=True)
    assert after["cached"] is False and len(after["sources"]) == 2

    embeds = embed_calls(fleet)
    moved = [rag_doc("fleetdocs", "minilm", generation_route="answers")]  # the local embedder now
    assert (await fleet.api.post("/api/v1/config:apply", json={"objects": moved})).status_code == 200
    await _until_spec(fleet, "embedding_model", "minilm")
    result = await ingest(fleet, "fleetdocs", docs(["oncall"]))
    assert result["reindexed"] == 4 and result["ingested"] == ["oncall"]  # the old chunks, re-embedded locally
    assert embed_calls(fleet) == embeds  # none of it went to the fleet
    got = await query(fleet, collection="fleetdocs", query="When is the dishwasher started?", retrieve_only=True)
    assert got["sources"][0]["document_id"] == "kitchen" and got["sources"][0]["similarity"] > 0.3


async def _until_spec(f: Fleet, field: str, value: object) -> None:
    async def seen() -> bool:
        return bool((await f.api.get("/api/v1/config/rag/fleetdocs")).json()["spec"][field] == value)

    await f.eventually(seen)


async def test_bad_input_gets_clear_errors_and_a_failed_batch_leaves_nothing(fleet: Fleet) -> None:
    missing = await fleet.api.post("/api/v1/rag/query", json={"collection": "nope", "query": "x"})
    assert missing.status_code == 404 and "no RAG collection 'nope'" in missing.json()["detail"]
    assert "handbook" in missing.json()["detail"]
    unknown = await fleet.api.post("/api/v1/rag/collections/nope/documents", json=docs(["gpu"]))
    assert unknown.status_code == 404
    blank = await fleet.api.post("/api/v1/rag/query", json={"collection": "handbook", "query": "   "})
    assert blank.status_code == 422 and "query is blank" in blank.json()["detail"]
    wrong = {"collection": "handbook", "query": "x", "filters": {"a": {"$gt": 1}}}
    bad_filter = await fleet.api.post("/api/v1/rag/query", json=wrong)
    assert bad_filter.status_code == 422 and "$in" in bad_filter.json()["detail"]
    chroma_op = await fleet.api.post("/api/v1/rag/query", json=wrong | {"filters": {"$and": [{"a": 1}, {"b": 2}]}})
    assert chroma_op.status_code == 422 and "'$and'" in chroma_op.json()["detail"]  # it was a 503 from Chroma
    twice = await fleet.api.post("/api/v1/rag/collections/handbook/documents", json={"documents": [{"id": "a", "text": "x"}] * 2})
    assert twice.status_code == 422 and "appears twice" in twice.json()["detail"]
    reranking = [rag_doc("reranked", "minilm", rerank={"enabled": True})]  # this control plane has no reranker
    assert (await fleet.api.post("/api/v1/config:apply", json={"objects": reranking})).status_code == 200
    await fleet.eventually(lambda: _exists(fleet, "reranked"))
    no_reranker = await fleet.api.post("/api/v1/rag/query", json={"collection": "reranked", "query": "x", "retrieve_only": True})
    assert no_reranker.status_code == 409 and "LLMTUNE_RAG__RERANKER_DIR" in no_reranker.json()["detail"]
    huge = {"documents": [{"id": "big", "text": "word " * 500_000}]}
    too_big = await fleet.api.post("/api/v1/rag/collections/handbook/documents", json=huge)
    assert too_big.status_code == 413 and "split it into several documents" in too_big.json()["detail"]

    await ingest(fleet, "fleetdocs", docs(["backups"]))
    before = (await fleet.api.get("/api/v1/rag/collections/fleetdocs/documents")).json()
    # The node fails after two embedding requests: the batch (9 new documents, 4 chunks per request) dies part-way.
    fleet.sims["node-0"].engine.faults.append(Fault("/api/embed", after=2, times=-1, status=500, message="GPU lost"))
    failed = await fleet.api.post("/api/v1/rag/collections/fleetdocs/documents", json=docs(list(QUESTIONS.values())))
    assert failed.status_code == 502 and "GPU lost" in failed.json()["detail"]
    assert (await fleet.api.get("/api/v1/rag/collections/fleetdocs/documents")).json() == before
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(fleet.tmp_path / "rag" / "chroma"), settings=Settings(anonymized_telemetry=False))
    assert client.get_collection("fleetdocs").count() == 1  # the 8 chunks written before the failure were removed again
    fleet.sims["node-0"].engine.faults.clear()
    got = await query(fleet, collection="fleetdocs", query="parking garage", top_k=10, retrieve_only=True, filters=None)
    assert {s["document_id"] for s in got["sources"]} <= {"backups"}


async def test_chroma_server_and_redis_cache_and_redis_down(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path, chroma_server: ChromaServer, redis_server: RedisServer
) -> None:
    f = await _fleet(etcd_server, keys, tmp_path, redis_url=redis_server.url)
    try:
        remote = [rag_doc("remote", "minilm", server_url=chroma_server.url, generation_route="answers")]
        assert (await f.api.post("/api/v1/config:apply", json={"objects": remote})).status_code == 200
        await f.eventually(lambda: _exists(f, "remote"))
        await ingest(f, "remote", docs(["gpu", "parking", "kitchen"]))
        import chromadb

        client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)
        assert client.get_collection("remote").count() == 3  # the vectors live in the server

        first = await query(f, collection="remote", query="coffee beans", retrieve_only=True)
        assert first["cached"] is False and first["sources"][0]["document_id"] == "kitchen"
        import redis

        held = redis.Redis.from_url(redis_server.url)
        assert any(k.startswith(b"llmtune:rag:hits:") for k in held.keys("llmtune:rag:*"))
        assert (await query(f, collection="remote", query="coffee beans", retrieve_only=True))["cached"] is True

        redis_server.stop()  # Redis down: answers go on, cached in process
        down = await query(f, collection="remote", query="charging electric cars", retrieve_only=True)
        assert down["sources"][0]["document_id"] == "parking"
        again = await query(f, collection="remote", query="charging electric cars", retrieve_only=True)
        assert again["cached"] is True
    finally:
        redis_server.start()
        await f.close()


def embed_calls(f: Fleet) -> int:
    return sum(1 for c in f.sims["node-0"].engine.calls if c[1] == "/api/embed")


async def _exists(f: Fleet, name: str) -> bool:
    return (await f.api.get(f"/api/v1/config/rag/{name}")).status_code == 200
