"""The REST API over a real etcd and SQLite: CRUD, preconditions, apply, history, auth, outages."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controlplane.api.app import create_app
from controlplane.settings import Settings
from controlplane.store.keys import KeySpace
from schemas.listing import ConfigList
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc, route_doc

pytestmark = pytest.mark.etcd
ADMIN = {"Authorization": "Bearer admin-secret"}


def make_client(etcd_url: str, tmp_path: Path, keys: KeySpace, *, pepper: str | None = None) -> TestClient:
    settings = Settings(
        store={"endpoints": [etcd_url], "namespace": keys.namespace, "timeout_s": 1.0},
        db={"url": f"sqlite:///{tmp_path / 'meta.db'}"},
        auth={"bootstrap_token": "admin-secret"},
        keys={"pepper": pepper},
    )
    return TestClient(create_app(settings))


@pytest.fixture
def client(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace) -> Iterator[TestClient]:
    with make_client(etcd_server.url, tmp_path, keys) as c:
        yield c


def token(client: TestClient, role: str) -> dict[str, str]:
    resp = client.post("/api/v1/tokens", json={"name": f"{role}-bot", "role": role}, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def test_crud_with_etags(client: TestClient) -> None:
    created = client.post("/api/v1/config/models", json=model_doc("m1"), headers=ADMIN)
    assert created.status_code == 201
    etag = created.headers["etag"]
    got = client.get("/api/v1/config/models/m1", headers=ADMIN)
    assert got.status_code == 200 and got.headers["etag"] == etag
    assert got.json()["metadata"]["revision"] == int(etag.strip('"'))
    dup = client.post("/api/v1/config/models", json=model_doc("m1"), headers=ADMIN)
    assert dup.status_code == 409 and dup.headers["content-type"] == "application/problem+json"
    listed = client.get("/api/v1/config/models", headers=ADMIN).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["m1"]
    updated = client.put("/api/v1/config/models/m1", json=model_doc("m1", ctx=4096), headers={**ADMIN, "If-Match": etag})
    assert updated.status_code == 200 and updated.headers["etag"] != etag
    stale = client.put("/api/v1/config/models/m1", json=model_doc("m1", ctx=2048), headers={**ADMIN, "If-Match": etag})
    assert stale.status_code == 409 and "re-read" in stale.json()["detail"]
    stale_delete = client.delete("/api/v1/config/models/m1", headers={**ADMIN, "If-Match": etag})
    assert stale_delete.status_code == 409
    gone = client.delete("/api/v1/config/models/m1", headers={**ADMIN, "If-Match": updated.headers["etag"]})
    assert gone.status_code == 200 and gone.json()["changes"] == [{"kind": "models", "name": "m1", "action": "delete"}]
    assert client.get("/api/v1/config/models/m1", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/config/widgets", headers=ADMIN).status_code == 404
    create_only = client.put("/api/v1/config/models/m2", json=model_doc("m2"), headers={**ADMIN, "If-None-Match": "*"})
    assert create_only.status_code == 200
    again = client.put("/api/v1/config/models/m2", json=model_doc("m2"), headers={**ADMIN, "If-None-Match": "*"})
    assert again.status_code == 409


def test_invalid_documents_get_422_naming_the_field(client: TestClient) -> None:
    bad = model_doc("m", ctx=64)
    resp = client.put("/api/v1/config/models/m", json=bad, headers=ADMIN)
    assert resp.status_code == 422
    body = resp.json()
    assert body["title"] == "Invalid document"
    assert body["errors"] == [{"field": "spec.context_window", "message": "Input should be greater than or equal to 128"}]
    typo = model_doc("m", temprature=0.5)
    resp = client.put("/api/v1/config/models/m", json=typo, headers=ADMIN)
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "spec.temprature"
    mismatch = client.put("/api/v1/config/models/other", json=model_doc("m"), headers=ADMIN)
    assert mismatch.status_code == 400 and "does not match" in mismatch.json()["detail"]
    wrong_kind = client.put("/api/v1/config/models/r", json=route_doc("r", "m"), headers=ADMIN)
    assert wrong_kind.status_code == 400
    dangling = client.put("/api/v1/config/routes/r", json=route_doc("r", "ghost"), headers=ADMIN)
    assert dangling.status_code == 422
    assert dangling.json()["errors"] == [
        {"field": "spec.targets[0].model", "object": "routes/r", "message": "model 'ghost' does not exist"}
    ]
    bad_etag = client.put("/api/v1/config/models/m", json=model_doc("m"), headers={**ADMIN, "If-Match": "yesterday"})
    assert bad_etag.status_code == 400
    assert client.get("/api/v1/history", headers=ADMIN).json()["items"] == []  # nothing was written


def test_apply_dry_run_then_apply(client: TestClient) -> None:
    change = {"objects": [model_doc("a"), model_doc("b"), route_doc("r", "a", "b")], "message": "bootstrap"}
    dry = client.post("/api/v1/config:apply", json={**change, "dry_run": True}, headers=ADMIN)
    assert dry.status_code == 200 and dry.json()["dry_run"] is True
    assert "+++ b/routes/r" in dry.json()["diff"]
    assert client.get("/api/v1/config", headers=ADMIN).json()["items"] == []
    done = client.post("/api/v1/config:apply", json=change, headers=ADMIN).json()
    items = client.get("/api/v1/config", headers=ADMIN).json()["items"]
    assert {i["metadata"]["revision"] for i in items} == {done["revision"]} and len(items) == 3
    swap = {"objects": [route_doc("r", "a")], "delete": [{"kind": "models", "name": "b"}]}
    assert client.post("/api/v1/config:apply", json=swap, headers=ADMIN).status_code == 200
    assert client.get("/api/v1/config/models/b", headers=ADMIN).status_code == 404
    twice = {"objects": [model_doc("a"), model_doc("a")]}
    assert client.post("/api/v1/config:apply", json=twice, headers=ADMIN).status_code == 400
    assert client.post("/api/v1/config:apply", json={}, headers=ADMIN).status_code == 400
    bad = client.post("/api/v1/config:apply", json={"objects": [{"kind": "Gadget", "metadata": {"name": "g"}}]}, headers=ADMIN)
    assert bad.status_code == 422


def test_history_diff_rollback_also_after_compaction(own_etcd: EtcdServer, tmp_path: Path, keys: KeySpace) -> None:
    with make_client(own_etcd.url, tmp_path, keys) as client:
        r1 = client.post("/api/v1/config:apply", json={"objects": [model_doc("m", ctx=1024)]}, headers=ADMIN).json()["revision"]
        for ctx in (2048, 4096):
            client.put("/api/v1/config/models/m", json=model_doc("m", ctx=ctx), headers=ADMIN)
        import asyncio

        from controlplane.store.etcd import EtcdConfig, EtcdStore

        async def compact() -> None:
            store = EtcdStore(EtcdConfig(endpoints=(own_etcd.url,)))
            await store.compact(await store.current_revision())
            await store.close()

        asyncio.run(compact())
        hist = client.get("/api/v1/config/models/m/history", headers=ADMIN).json()["items"]
        assert [h["after"]["spec"]["context_window"] for h in hist] == [4096, 2048, 1024]
        assert hist[0]["actor"] == "bootstrap-admin"
        diff = client.get(f"/api/v1/diff?from={r1}", headers=ADMIN).json()
        assert "-  context_window: 1024\n" in diff["diff"] and "+  context_window: 4096\n" in diff["diff"]
        dry = client.post("/api/v1/rollback", json={"revision": r1, "dry_run": True}, headers=ADMIN).json()
        assert dry["dry_run"] and dry["changes"] == [{"kind": "models", "name": "m", "action": "update"}]
        done = client.post("/api/v1/rollback", json={"revision": r1, "kind": "models", "name": "m"}, headers=ADMIN).json()
        assert done["revision"] > r1
        assert client.get("/api/v1/config/models/m", headers=ADMIN).json()["spec"]["context_window"] == 1024
        assert client.post("/api/v1/rollback", json={"revision": 10**6}, headers=ADMIN).status_code == 422
        assert client.post("/api/v1/rollback", json={"revision": r1, "kind": "models"}, headers=ADMIN).status_code == 400


def test_auth_roles(client: TestClient) -> None:
    assert client.get("/api/v1/config").status_code == 401
    assert client.get("/api/v1/config", headers={"Authorization": "Bearer nope"}).status_code == 401
    viewer, operator = token(client, "viewer"), token(client, "operator")
    assert client.get("/api/v1/config", headers=viewer).status_code == 200
    denied = client.put("/api/v1/config/models/m", json=model_doc("m"), headers=viewer)
    assert denied.status_code == 403 and "needs operator" in denied.json()["detail"]
    assert client.put("/api/v1/config/models/m", json=model_doc("m"), headers=operator).status_code == 200
    assert client.get("/api/v1/tokens", headers=operator).status_code == 403
    assert client.post("/api/v1/tokens", json={"name": "x", "role": "emperor"}, headers=ADMIN).status_code == 422
    hist = client.get("/api/v1/history", headers=viewer).json()["items"]
    assert hist[0]["actor"] == "operator-bot"
    tokens = client.get("/api/v1/tokens", headers=ADMIN).json()["items"]
    op_id = next(t["id"] for t in tokens if t["name"] == "operator-bot")
    assert client.delete(f"/api/v1/tokens/{op_id}", headers=ADMIN).status_code == 204
    assert client.get("/api/v1/config", headers=operator).status_code == 401
    assert "token_hash" not in json.dumps(tokens) and all("token" not in t for t in tokens)


def test_tokens_have_a_prefix_a_keyed_hash_an_expiry_a_last_use_and_rotate(
    etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace
) -> None:
    import sqlite3

    pepper = "api-test-pepper-0123456789"
    with make_client(etcd_server.url, tmp_path, keys, pepper=pepper) as client:
        made = client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer", "expires_in_s": 2}, headers=ADMIN)
        assert made.status_code == 201, made.text
        body = made.json()
        secret, prefix = body["token"], body["prefix"]
        assert re.fullmatch(r"llmt_[0-9a-f]{8}", prefix) and secret.startswith(prefix + "_") and body["expires_at"]
        stored = sqlite3.connect(tmp_path / "meta.db").execute("SELECT token_hash FROM api_tokens WHERE name='ci'").fetchone()[0]
        assert stored == hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()  # keyed, never the secret
        auth = {"Authorization": f"Bearer {secret}"}
        assert client.get("/api/v1/config", headers=auth).status_code == 200
        listed = client.get("/api/v1/tokens", headers=ADMIN).json()["items"]
        assert listed[0]["last_used_at"] and listed[0]["prefix"] == prefix and secret not in json.dumps(listed)
        rotated = client.post(f"/api/v1/tokens/{body['id']}:rotate", json={"grace_s": 0.5}, headers=ADMIN).json()
        new = {"Authorization": f"Bearer {rotated['token']}"}
        assert rotated["prefix"] != prefix and rotated["previous_valid_until"]
        assert client.get("/api/v1/config", headers=auth).status_code == 200  # the old secret, within its grace
        time.sleep(0.6)
        ended = client.get("/api/v1/config", headers=auth)
        assert ended.status_code == 401 and "grace has ended" in ended.json()["detail"]
        assert client.get("/api/v1/config", headers=new).status_code == 200
        time.sleep(1.5)  # past the 2 s it was made for
        expired = client.get("/api/v1/config", headers=new)
        assert expired.status_code == 401 and "has expired" in expired.json()["detail"]
        assert client.post("/api/v1/tokens/999:rotate", json={}, headers=ADMIN).status_code == 404


def test_store_down_returns_503_and_writes_nothing(own_etcd: EtcdServer, tmp_path: Path, keys: KeySpace) -> None:
    with make_client(own_etcd.url, tmp_path, keys) as client:
        assert client.put("/api/v1/config/models/m", json=model_doc("m"), headers=ADMIN).status_code == 200
        own_etcd.stop()
        try:
            resp = client.put("/api/v1/config/models/n", json=model_doc("n"), headers=ADMIN)
            assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
            assert "nothing was changed" in resp.json()["detail"]
            assert client.get("/api/v1/config/models/m", headers=ADMIN).status_code == 503
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["store"].startswith("down")
        finally:
            own_etcd.start()
        assert client.get("/api/v1/config/models/n", headers=ADMIN).status_code == 404
        assert [h["name"] for h in client.get("/api/v1/history", headers=ADMIN).json()["items"]] == ["m"]


def test_health_metrics_schemas_status(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    client.put("/api/v1/config/models/m", json=model_doc("m"), headers=ADMIN)
    metrics = client.get("/metrics").text
    assert 'llmtune_api_requests_total{method="PUT",route="/api/v1/config/{kind}/{name}",status="200"} 1.0' in metrics
    assert 'llmtune_informer_lists_total{informer="config"} 1.0' in metrics
    assert 'llmtune_informer_objects{informer="config"}' in metrics
    schema = client.get("/api/v1/schemas/models", headers=ADMIN).json()
    assert "spec" in schema["properties"]
    assert client.get("/api/v1/schemas/nope", headers=ADMIN).status_code == 404
    status = client.get("/api/v1/status", headers=ADMIN).json()
    assert status["nodes"] == [] and status["revision"] >= 1
    assert "/api/v1/config:apply" in client.get("/openapi.json").json()["paths"]


def test_listings_page_and_filter_on_the_server(client: TestClient) -> None:
    docs = [model_doc(f"m{i:02d}") for i in range(12)]
    docs[3]["metadata"]["labels"] = docs[7]["metadata"]["labels"] = {"team": "search"}
    docs.append(route_doc("r1", "m01"))
    assert client.post("/api/v1/config:apply", json={"objects": docs}, headers=ADMIN).status_code == 200
    seen, token, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 5} | ({"continue": token} if token else {})
        page = ConfigList.model_validate(client.get("/api/v1/config", params=params, headers=ADMIN).json())
        assert page.total == 13 and len(page.items) <= 5
        seen += [f"{type(i).plural}/{i.name}" for i in page.items]
        pages, token = pages + 1, page.next
        if token is None:
            break
    assert pages == 3 and seen == [f"models/m{i:02d}" for i in range(12)] + ["routes/r1"]
    found = client.get("/api/v1/config/models", params={"q": "M1", "limit": 1}, headers=ADMIN).json()
    assert [i["metadata"]["name"] for i in found["items"]] == ["m10"] and found["total"] == 2 and found["next"] == "models/m10"
    rest = client.get("/api/v1/config/models", params={"q": "M1", "continue": found["next"]}, headers=ADMIN).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["m11"] and rest["next"] is None
    team = client.get("/api/v1/config/models", params={"selector": "team=search"}, headers=ADMIN).json()
    assert [i["metadata"]["name"] for i in team["items"]] == ["m03", "m07"]
    for bad in ({"continue": "widgets/x"}, {"selector": "team"}, {"limit": 0}):
        answer = client.get("/api/v1/config", params=bad, headers=ADMIN)
        assert answer.status_code in (400, 422) and answer.headers["content-type"] == "application/problem+json", bad
    one = client.get("/api/v1/config/models/m03", headers=ADMIN).json()
    assert list(one)[:3] == ["kind", "metadata", "spec"] and one["metadata"]["labels"] == {"team": "search"}


def test_watch_streams_changes_as_sse(client: TestClient) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    def writer() -> None:
        import time

        time.sleep(0.5)
        client.put("/api/v1/config/models/w", json=model_doc("w"), headers=ADMIN)
        client.delete("/api/v1/config/models/w", headers=ADMIN)

    thread = threading.Thread(target=writer)
    with client.stream("GET", "/api/v1/watch?kind=models", headers=ADMIN) as resp:
        assert resp.status_code == 200
        thread.start()
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line[5:])))
                if len(events) == 3:
                    break
    thread.join()
    assert events[0][0] == "hello"
    assert [(e, d["type"], d["name"]) for e, d in events[1:]] == [("change", "put", "w"), ("change", "delete", "w")]
    assert events[1][1]["object"]["spec"]["context_window"] == 8192


def test_change_set_larger_than_one_transaction_is_refused_whole(client: TestClient) -> None:
    ok = client.post("/api/v1/config:apply", json={"objects": [model_doc(f"m{i}") for i in range(100)]}, headers=ADMIN)
    assert ok.status_code == 200 and len(ok.json()["changes"]) == 100
    big = client.post("/api/v1/config:apply", json={"objects": [model_doc(f"n{i}") for i in range(130)]}, headers=ADMIN)
    assert big.status_code == 413 and "split it" in big.json()["detail"]
    assert all(
        not i["metadata"]["name"].startswith("n") for i in client.get("/api/v1/config/models", headers=ADMIN).json()["items"]
    )


def test_recovers_within_seconds_after_a_long_store_outage(own_etcd: EtcdServer, tmp_path: Path, keys: KeySpace) -> None:
    import time

    with make_client(own_etcd.url, tmp_path, keys) as client:
        own_etcd.stop()
        try:
            for _ in range(8):  # repeated failures grow gRPC's reconnect backoff
                assert client.get("/api/v1/config/models", headers=ADMIN).status_code == 503
                time.sleep(0.5)
        finally:
            own_etcd.start()
        deadline = time.monotonic() + 3
        while client.get("/api/v1/config/models", headers=ADMIN).status_code != 200:
            assert time.monotonic() < deadline, "still unavailable 3 s after etcd came back"
            time.sleep(0.1)


def test_oversized_body_is_refused_with_413(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace) -> None:
    settings = Settings(
        store={"endpoints": [etcd_server.url], "namespace": keys.namespace},
        db={"url": f"sqlite:///{tmp_path / 'meta.db'}"},
        auth={"bootstrap_token": "admin-secret"},
        api={"max_body_bytes": 4096},
    )
    with TestClient(create_app(settings)) as client:
        big = model_doc("m", system_prompt="x" * 10_000)
        resp = client.put("/api/v1/config/models/m", json=big, headers=ADMIN)
        assert resp.status_code == 413 and resp.headers["content-type"] == "application/problem+json"
        assert client.get("/api/v1/config/models/m", headers=ADMIN).status_code == 404
        body = json.dumps(big).encode()
        chunked = (body[i : i + 1024] for i in range(0, len(body), 1024))  # no Content-Length: counted as it streams
        streamed = client.put("/api/v1/config/models/m", content=chunked, headers=ADMIN)
        assert streamed.status_code == 413 and streamed.json()["title"] == "Request too large"


def test_integers_past_int64_are_a_clear_422_not_a_500(client: TestClient) -> None:
    """Reproductions found by schemathesis: numbers past a signed 64-bit integer overflowed in SQL."""
    for path in (
        "/api/v1/diff?from=17079909250390025236905984",
        "/api/v1/history?before=56360312442808318258952798208",
        "/api/v1/history?before=9223372036854775807",
        "/api/v1/rag/collections/docs/documents?offset=99999999999999999999",
    ):
        resp = client.get(path, headers=ADMIN)
        assert resp.status_code == 422, (path, resp.text)
        assert "less than or equal to" in resp.text
    too_big = model_doc("big")
    too_big["spec"]["options"] = {"seed": 2**64}
    resp = client.put("/api/v1/config/models/big", json=too_big, headers=ADMIN)
    assert resp.status_code == 422 and "seed" in resp.text
    assert client.get("/api/v1/config/models/big", headers=ADMIN).status_code == 404
    for bad in ('"99999999999999999999999"', '"-3"', "12x"):
        resp = client.put("/api/v1/config/models/big", json=model_doc("big"), headers={**ADMIN, "If-Match": bad})
        assert resp.status_code == 400 and "If-Match" in resp.json()["detail"], (bad, resp.text)
    assert client.delete("/api/v1/tokens/99999999999999999999", headers=ADMIN).status_code == 422
    assert client.get("/api/v1/history?before=9223372036854774784", headers=ADMIN).status_code == 200


def test_rollback_before_history_and_mass_deletions_need_force(client: TestClient) -> None:
    """A fuzzer's ``rollback {revision: 0}`` deleted every object in one call."""
    first = client.put("/api/v1/config/models/a", json=model_doc("a"), headers=ADMIN).json()["metadata"]["revision"]
    for name in ("b", "c"):
        assert client.put(f"/api/v1/config/models/{name}", json=model_doc(name), headers=ADMIN).status_code == 200
    zero = client.post("/api/v1/rollback", json={"revision": 0}, headers=ADMIN)
    assert zero.status_code == 422 and f"({first}.." in zero.json()["detail"]
    everything = client.post("/api/v1/rollback", json={"revision": first}, headers=ADMIN)  # deletes b and c: 2 of 3
    assert everything.status_code == 422 and "force" in everything.json()["detail"]
    assert len(client.get("/api/v1/config/models", headers=ADMIN).json()["items"]) == 3  # nothing was written
    dry = client.post("/api/v1/rollback", json={"revision": first, "dry_run": True}, headers=ADMIN)
    assert dry.status_code == 200 and len(dry.json()["changes"]) == 2
    forced = client.post("/api/v1/rollback", json={"revision": first, "force": True}, headers=ADMIN)
    assert forced.status_code == 200 and [i["metadata"]["name"] for i in client.get(
        "/api/v1/config/models", headers=ADMIN).json()["items"]] == ["a"]  # fmt: skip
    gone = {"delete": [{"kind": "models", "name": "a"}, {"kind": "models", "name": "b"}]}
    assert client.post("/api/v1/config:apply", json=gone, headers=ADMIN).status_code in (404, 422)
    assert client.delete("/api/v1/config/models/a", headers=ADMIN).status_code == 200  # one explicit delete needs none
