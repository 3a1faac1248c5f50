"""Invalid bytes another writer put in the store, on real etcd and ZooKeeper: every process keeps
the last good value and says so (status, readiness, a gauge), a GET shows what is stored, and
every write path (PUT, apply, delete) repairs it, also after the control plane and the router
restarted with the invalid item in the store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest

from controlplane.store.base import ConfigStore
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.keys import KeySpace
from controlplane.store.zookeeper import ZooKeeperConfig, ZooKeeperStore
from tests.fixtures.fleet import Fleet
from tests.helpers import model_doc, rag_doc, route_doc

ROUTE = route_doc("default-chat", "small", match={"model_aliases": ["chat"]})
CONFIG = [
    model_doc("small", tag="llama3.2:1b"),
    model_doc("embedder", tag="nomic-embed-text", caps=["embed"]),
    ROUTE,
    rag_doc("kbase", "embedder", generation_route="default-chat"),
]
BAD = b'{"kind":"Route","metadata":{"name":"default-chat"},"spec":{"targets":[{"model":"nope","weight":"x"}]}}'


@pytest.fixture(params=["etcd", "zookeeper"])
def open_store(request: pytest.FixtureRequest) -> Callable[[], ConfigStore]:
    if request.param == "etcd":
        url = request.getfixturevalue("etcd_server").url
        return lambda: EtcdStore(EtcdConfig(endpoints=(url,)))
    hosts, root = request.getfixturevalue("zookeeper_server").hosts, f"/t{uuid.uuid4().hex[:10]}"
    return lambda: ZooKeeperStore(ZooKeeperConfig(hosts=hosts, root=root, progress_interval_s=1.0))


@pytest.fixture
async def fleet(open_store: Callable[[], ConfigStore], keys: KeySpace, tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet("", keys, tmp_path, open_store=open_store)
    await f.start_control_plane()
    await f.add_node("node-0")
    assert (await f.api.post("/api/v1/config:apply", json={"objects": CONFIG})).status_code == 200

    async def pulled() -> bool:
        models = (await f.api.get("/api/v1/models/status")).json()["models"]
        return all(m["ready_nodes"] == 1 for m in models)

    await f.eventually(pulled, timeout_s=15)
    await f.start_router()
    yield f
    await f.close()


async def put_raw(fleet: Fleet, key: str, value: bytes) -> int:
    """What ``etcdctl put`` (or ``zkCli set``) does: bytes at a key, past the write path."""
    store = fleet.open_store()
    try:
        return await store.put(key, value)
    finally:
        await store.close()


async def stored(fleet: Fleet, key: str) -> tuple[bytes, int] | None:
    store = fleet.open_store()
    try:
        kv = await store.get(key)
        return (kv.value, kv.mod_revision) if kv else None
    finally:
        await store.close()


def gauge(text: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith("llmtune_config_invalid_objects "))
    return float(line.split()[1])


async def chat(fleet: Fleet) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fleet.router_port}", timeout=10) as client:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        return await client.post("/api/chat", json=body)


async def router_ready(fleet: Fleet) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fleet.router_port}") as client:
        data: dict[str, object] = (await client.get("/readyz")).json()
        return data


async def reported(fleet: Fleet, revision: int) -> bool:
    """The control plane lists exactly the invalid route, at ``revision``."""
    items = (await fleet.api.get("/api/v1/status")).json()["invalid_objects"]
    return [(i["kind"], i["name"], i["revision"]) for i in items] == [("routes", "default-chat", revision)]


async def test_invalid_object_is_visible_and_every_write_path_repairs_it(fleet: Fleet, keys: KeySpace) -> None:
    key = keys.config("routes", "default-chat")

    async def serving() -> bool:
        return (await chat(fleet)).status_code == 200

    await fleet.eventually(serving, timeout_s=15)
    bad_rev = await put_raw(fleet, key, BAD)

    # Visible: status, readiness (still ready), the gauge on the control plane, router and agent.
    await fleet.eventually(lambda: reported(fleet, bad_rev))
    status = (await fleet.api.get("/api/v1/status")).json()
    assert "spec.targets.0.weight" in status["invalid_objects"][0]["error"]
    ready = await fleet.api.get("/readyz")
    assert ready.status_code == 200 and "routes/default-chat at revision" in ready.json()["checks"]["config"]
    assert gauge((await fleet.api.get("/metrics")).text) == 1
    await fleet.until(lambda: len(fleet.router.feed.view.invalid) == 1)
    await fleet.until(lambda: len(fleet.agent("node-0").desired.view.invalid) == 1)
    # The consumers act on the last good value.
    assert (await chat(fleet)).status_code == 200
    listing = (await fleet.api.get("/api/v1/config/routes")).json()
    assert listing["items"] == [] and [i["name"] for i in listing["invalid"]] == ["default-chat"]

    # GET: a problem of its own type carrying the stored text and the error, not a 422.
    got = await fleet.api.get("/api/v1/config/routes/default-chat")
    assert got.status_code == 409, got.text
    problem = got.json()
    assert problem["type"].endswith("/invalid-stored-object")
    assert problem["stored"]["raw"] == BAD.decode() and problem["stored"]["revision"] == bad_rev
    assert "weight" in problem["stored"]["error"]

    # A PUT of the valid object writes it (a 200 means the store holds what it says).
    put = await fleet.api.put("/api/v1/config/routes/default-chat", json=ROUTE)
    assert put.status_code == 200, put.text
    now = await stored(fleet, key)
    assert now is not None and now[1] == put.json()["metadata"]["revision"] > bad_rev and now[0] != BAD
    await fleet.eventually(lambda: reported_none(fleet))

    # Deleting an invalid object is allowed, though a RAG collection names the route.
    await put_raw(fleet, key, BAD)
    await fleet.eventually(lambda: has_invalid(fleet))
    deleted = await fleet.api.delete("/api/v1/config/routes/default-chat")
    assert deleted.status_code == 200, deleted.text
    assert await stored(fleet, key) is None
    refused = await fleet.api.delete("/api/v1/config/models/embedder")  # a valid object in use is still protected
    assert refused.status_code == 422


async def test_repair_after_the_consumers_restarted_with_the_invalid_object(fleet: Fleet, keys: KeySpace) -> None:
    key = keys.config("routes", "default-chat")
    bad_rev = await put_raw(fleet, key, BAD)
    await fleet.eventually(lambda: reported(fleet, bad_rev))

    # A restarted router has no last good value: it reports the item instead of dropping it silently.
    await fleet.stop_router()
    await fleet.start_router()
    ready = await router_ready(fleet)
    assert [(i["kind"], i["name"]) for i in ready["invalid_objects"]] == [("routes", "default-chat")]  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fleet.router_port}") as client:
        assert gauge((await client.get("/metrics")).text) == 1

    # A restarted control plane still lists it, and an apply of the examples writes the route at once
    # (it used to answer "409 Conflict: the configuration changed under this write 8 times").
    await fleet.stop_control_plane()
    await fleet.start_control_plane()
    await fleet.eventually(lambda: reported(fleet, bad_rev))
    applied = await fleet.api.post("/api/v1/config:apply", json={"objects": CONFIG})
    assert applied.status_code == 200, applied.text
    body = applied.json()
    assert [(c["kind"], c["name"], c["action"]) for c in body["changes"]] == [("routes", "default-chat", "update")]
    now = await stored(fleet, key)
    assert now is not None and now[1] == body["revision"]
    again = await fleet.api.post("/api/v1/config:apply", json={"objects": CONFIG})
    assert again.json()["changes"] == []
    await fleet.eventually(lambda: reported_none(fleet))
    await fleet.until(lambda: not fleet.router.feed.view.invalid)

    async def routed() -> bool:
        return (await chat(fleet)).status_code == 200

    await fleet.eventually(routed)
    history = (await fleet.api.get("/api/v1/config/routes/default-chat/history")).json()
    assert history["items"][0]["before"]["spec"]["targets"][0]["weight"] == "x"  # the audit row shows what it replaced


async def test_keys_and_documents_that_do_not_belong_together(fleet: Fleet, keys: KeySpace) -> None:
    """A document under another kind's or name's key, a key that is no object path, bytes that are no JSON."""
    model = model_doc("small", tag="llama3.2:1b")
    await put_raw(fleet, keys.config("routes", "small"), orjson.dumps(model))
    await put_raw(fleet, keys.config("models", "other"), orjson.dumps(model))
    await put_raw(fleet, keys.config_prefix("routes") + "a/b", b"{}")
    await put_raw(fleet, keys.config("models", "garbage"), b"\xff\xfe not json")

    async def four() -> bool:
        return len((await fleet.api.get("/api/v1/status")).json()["invalid_objects"]) == 4

    await fleet.eventually(four)
    errors = {i["key"]: i["error"] for i in (await fleet.api.get("/api/v1/status")).json()["invalid_objects"]}
    assert "the key names routes/small but the document is models/small" in errors[keys.config("routes", "small")]
    assert "not a config key" in errors[keys.config_prefix("routes") + "a/b"]
    assert (await fleet.api.get("/api/v1/config/models/garbage")).json()["stored"]["raw"].endswith("not json")
    # the valid model under its own key is untouched, and the router still serves it
    assert (await fleet.api.get("/api/v1/config/models/small")).status_code == 200
    assert (await chat(fleet)).status_code == 200
    # a whole-configuration rollback to the first revision removes what it never held
    first = (await fleet.api.get("/api/v1/history", params={"limit": 100})).json()["items"][-1]["revision"]
    rolled = await fleet.api.post("/api/v1/rollback", json={"revision": first})
    assert rolled.status_code == 200, rolled.text
    gone = {(c["kind"], c["name"]) for c in rolled.json()["changes"]}
    assert {("routes", "small"), ("models", "other"), ("models", "garbage")} <= gone


async def reported_none(fleet: Fleet) -> bool:
    return (await fleet.api.get("/api/v1/status")).json()["invalid_objects"] == []


async def has_invalid(fleet: Fleet) -> bool:
    return bool((await fleet.api.get("/api/v1/status")).json()["invalid_objects"])
