"""ZooKeeper-specific behaviour against a real ZooKeeper 3.8: session expiry, lease re-creation, and
the control plane's API running on it unchanged (restart, compaction and CAS scenarios are shared
with etcd in test_informer_backends)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from controlplane.api.app import create_app
from controlplane.settings import Settings
from controlplane.store.base import EventType
from controlplane.store.informer import Informer, Snapshot
from controlplane.store.keys import KeySpace
from controlplane.store.leases import LeaseKeeper
from controlplane.store.zookeeper import ZooKeeperConfig, ZooKeeperStore
from tests.fixtures.services import ZooKeeperServer
from tests.helpers import model_doc, route_doc

ROOT = Path(__file__).resolve().parents[2]


def zk_store(server: ZooKeeperServer, root: str | None = None) -> ZooKeeperStore:
    root = root or f"/t{uuid.uuid4().hex[:10]}"
    return ZooKeeperStore(ZooKeeperConfig(hosts=server.hosts, root=root, timeout_s=10, progress_interval_s=0.5))


AGENT = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from controlplane.store.leases import LeaseKeeper
    from controlplane.store.zookeeper import ZooKeeperConfig, ZooKeeperStore

    async def main():
        store = ZooKeeperStore(ZooKeeperConfig(hosts={hosts!r}, root={zroot!r}))
        keeper = LeaseKeeper(store, ttl_s=2)
        await keeper.set_key({key!r}, b"alive")
        print("ready", flush=True)
        await keeper.run()

    asyncio.run(main())
    """
)


async def test_a_dead_agent_s_liveness_key_vanishes_within_the_session_timeout(
    zookeeper_server: ZooKeeperServer, keys: KeySpace
) -> None:
    zroot = f"/t{uuid.uuid4().hex[:10]}"
    store = zk_store(zookeeper_server, zroot)
    key = keys.node("agent-1")
    informer = Informer(store, keys.nodes_prefix())
    present, gone = asyncio.Event(), asyncio.Event()
    gone_at: list[float] = []

    def on_snapshot(snapshot: Snapshot) -> None:
        if key in snapshot.items:
            present.set()
        elif present.is_set() and any(e.type is EventType.DELETE and e.key == key for e in snapshot.changes):
            gone_at.append(time.monotonic())
            gone.set()

    informer.add_handler(on_snapshot)
    task = asyncio.create_task(informer.run())
    script = AGENT.format(root=str(ROOT), hosts=zookeeper_server.hosts, zroot=zroot, key=key)
    agent = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    try:
        assert agent.stdout is not None and (await agent.stdout.readline()).strip() == b"ready"
        async with asyncio.timeout(5):
            await present.wait()
        agent.kill()  # no goodbye: the session must expire
        killed = time.monotonic()
        async with asyncio.timeout(10):
            await gone.wait()
        assert gone_at[0] - killed < 2 + 2.5  # the 2 s session timeout, plus reaping
        assert await store.get(key) is None
    finally:
        if agent.returncode is None:
            agent.kill()
        await agent.wait()
        task.cancel()
        await store.close()


async def test_keeper_recreates_keys_after_its_lease_expired(zookeeper_server: ZooKeeperServer, keys: KeySpace) -> None:
    store = zk_store(zookeeper_server)
    keeper = LeaseKeeper(store, ttl_s=1)
    key = keys.status("node-a")
    await keeper.set_key(key, b"ok")
    first = keeper.lease_id
    async with asyncio.timeout(6):  # a stalled agent: no keepalive for longer than the TTL
        while await store.get(key) is not None:  # noqa: ASYNC110 - polling a remote store
            await asyncio.sleep(0.1)
    await keeper.refresh_once()  # the lease is gone: a new one, and the key again
    kv = await store.get(key)
    assert keeper.lease_id != first and kv is not None and kv.value == b"ok" and kv.lease == keeper.lease_id
    await keeper.close()
    await store.close()


def test_the_api_runs_unchanged_on_zookeeper(zookeeper_server: ZooKeeperServer, tmp_path: Path, keys: KeySpace) -> None:
    settings = Settings(
        store={"backend": "zookeeper", "zookeeper_hosts": zookeeper_server.hosts, "zookeeper_root": f"/t{uuid.uuid4().hex[:10]}",
               "namespace": keys.namespace},
        db={"url": f"sqlite:///{tmp_path / 'meta.db'}"},
        auth={"bootstrap_token": "admin"},
    )  # fmt: skip
    h = {"Authorization": "Bearer admin"}
    with TestClient(create_app(settings)) as client:
        applied = client.post(
            "/api/v1/config:apply", json={"objects": [model_doc("a"), model_doc("b"), route_doc("r", "a")]}, headers=h
        )
        assert applied.status_code == 200, applied.text
        first = applied.json()["revision"]
        etag = client.get("/api/v1/config/routes/r", headers=h).headers["etag"]
        assert (
            client.put("/api/v1/config/routes/r", json=route_doc("r", "a", "b"), headers={**h, "If-Match": etag}).status_code
            == 200
        )
        assert client.put("/api/v1/config/routes/r", json=route_doc("r", "b"), headers={**h, "If-Match": etag}).status_code == 409
        refused = client.delete("/api/v1/config/models/a", headers=h)
        assert refused.status_code == 422
        assert (
            client.post("/api/v1/rollback", json={"revision": first, "kind": "routes", "name": "r"}, headers=h).status_code == 200
        )
        assert [t["model"] for t in client.get("/api/v1/config/routes/r", headers=h).json()["spec"]["targets"]] == ["a"]
        assert [i["action"] for i in client.get("/api/v1/history?kind=routes", headers=h).json()["items"]] == [
            "update",
            "update",
            "create",
        ]
        assert client.get("/readyz").json()["ready"] is True
