"""The fleet on the ZooKeeper backend: agents register under sessions (leases), apply models, and
a tune with wait=applied returns once both nodes applied it; a dead agent's node leaves the fleet."""

from __future__ import annotations

import uuid
from pathlib import Path

from controlplane.store.keys import KeySpace
from controlplane.store.zookeeper import ZooKeeperConfig, ZooKeeperStore
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import ZooKeeperServer
from tests.helpers import model_doc


async def test_apply_tune_and_node_loss_on_zookeeper(zookeeper_server: ZooKeeperServer, keys: KeySpace, tmp_path: Path) -> None:
    root = f"/t{uuid.uuid4().hex[:10]}"

    def open_store() -> ZooKeeperStore:
        return ZooKeeperStore(ZooKeeperConfig(hosts=zookeeper_server.hosts, root=root, progress_interval_s=1.0))

    fleet = Fleet("", keys, tmp_path, open_store=open_store)
    try:
        await fleet.start_control_plane()
        for i in range(2):
            await fleet.add_node(f"zk-{i}")
        doc = model_doc("assistant", tag="assistant:v1", base="llama3.1:8b", system_prompt="Hi.", options={"temperature": 0.4})
        assert (await fleet.api.post("/api/v1/config:apply", json={"objects": [doc]})).status_code == 200

        async def ready() -> bool:
            models = (await fleet.api.get("/api/v1/models/status")).json()["models"]
            return bool(models) and models[0]["ready_nodes"] == 2

        await fleet.eventually(ready, timeout_s=15)
        resp = await fleet.api.put("/api/v1/tune?wait=applied&timeout=15", json={"model": "assistant", "options": {"top_k": 20}})
        assert resp.status_code == 200 and resp.json()["complete"], resp.text
        assert all("top_k" in s.engine.models["assistant:v1"].parameters for s in fleet.sims.values())

        await fleet.stop_agent("zk-1", crash=True)  # its session expires after the lease TTL (3 s)

        async def gone() -> bool:
            nodes = (await fleet.api.get("/api/v1/nodes")).json()["nodes"]
            return [n["node"] for n in nodes] == ["zk-0"]

        await fleet.eventually(gone, timeout_s=15)
    finally:
        await fleet.close()
