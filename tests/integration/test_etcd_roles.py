"""The etcd role layout the README's security section documents, on a real etcd with TLS, auth
and client-certificate users (the certificate's CN is the user): an agent reads the configuration
and writes only its own ``nodes/<node>`` and ``status/<node>`` keys (exact keys, so ``node1``
never covers ``node10``); the router reads everything and writes only its load reports."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agents.sidecar.agent import Agent
from agents.sidecar.settings import AgentGroup
from controlplane.store.base import Put
from controlplane.store.errors import StoreError
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.keys import KeySpace
from router.load import LoadReporter
from tests.fixtures.services import EtcdServer, free_port
from tests.helpers import model_doc
from tests.sim.server import SimServer

pytestmark = pytest.mark.etcd
KEYS = KeySpace("roles")


def client_cert(server: EtcdServer, user: str) -> tuple[str, str]:
    """A client certificate whose CN is ``user``, signed by the server's CA."""
    folder = Path(server.certs["ca.crt"]).parent

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={user}", "-keyout", f"{user}.key", "-out", f"{user}.csr")
    ssl("x509", "-req", "-in", f"{user}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", f"{user}.crt")  # fmt: skip
    return str(folder / f"{user}.crt"), str(folder / f"{user}.key")


def grant_layout(server: EtcdServer, ns: str, nodes: list[str]) -> None:
    """The documented layout, with etcdctl as the README gives it."""
    root = f"/{ns}/v1/"
    run = server.etcdctl
    run("role", "add", "llmtune-router")
    run("role", "grant-permission", "llmtune-router", "read", "--prefix=true", root)
    run("role", "grant-permission", "llmtune-router", "readwrite", "--prefix=true", f"{root}load/")  # its load reports
    run("user", "add", "llmtune-router", "--no-password")
    run("user", "grant-role", "llmtune-router", "llmtune-router")
    for node in nodes:
        role = f"llmtune-agent-{node}"
        run("role", "add", role)
        run("role", "grant-permission", role, "read", "--prefix=true", f"{root}config/")
        run("role", "grant-permission", role, "read", f"{root}meta/epoch")
        run("role", "grant-permission", role, "readwrite", f"{root}nodes/{node}")  # the exact key: no prefix
        run("role", "grant-permission", role, "readwrite", f"{root}status/{node}")
        run("role", "grant-permission", role, "read", "--prefix=true", f"{root}placement/{node}")  # what the autoscaler gives it
        run("role", "grant-permission", role, "read", "--prefix=true", f"{root}load/")  # routers' reports: drains wait on them
        run("role", "grant-permission", role, "read", "--prefix=true", f"{root}scaling/")  # ready replicas: restarts wait on them
        run("user", "add", role, "--no-password")
        run("user", "grant-role", role, role)


@pytest.fixture(scope="module")
def secured() -> Iterator[EtcdServer]:
    server = EtcdServer(tls=True)
    server.start()
    server.etcdctl("user", "add", "root:s3cret", "--interactive=false")
    grant_layout(server, KEYS.namespace, ["node1"])
    server.etcdctl("auth", "enable")
    yield server
    server.close()


def store_as(server: EtcdServer, user: str | None) -> EtcdStore:
    """A store client: ``user`` by certificate CN, or root by password."""
    ca = server.certs["ca.crt"]
    if user is None:
        cert, key = server.certs["client.crt"], server.certs["client.key"]
        return EtcdStore(EtcdConfig(endpoints=(server.url,), username="root", password="s3cret", ca_file=ca, cert_file=cert,
                                    key_file=key, timeout_s=3))  # fmt: skip
    cert, key = client_cert(server, user)
    return EtcdStore(EtcdConfig(endpoints=(server.url,), ca_file=ca, cert_file=cert, key_file=key, timeout_s=3))


async def test_an_agent_reads_config_and_writes_only_its_own_keys(secured: EtcdServer) -> None:
    admin = store_as(secured, None)
    model = model_doc("chat", tag="llama3.2:1b", ctx=8192)
    await admin.put(KEYS.config("models", "chat"), orjson.dumps(model))
    sim = SimServer(free_port())
    await sim.start()
    store = store_as(secured, "llmtune-agent-node1")
    settings = AgentGroup(node="node1", ollama_url=sim.url, port=0, lease_ttl_s=3, probe_interval_s=0.2, resync_interval_s=5)
    agent = Agent(settings, store, keys=KEYS)
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(20):  # the real agent registers, reads the configuration, pulls, reports
            while True:
                status = await admin.get(KEYS.status("node1"))
                if status is not None and "llama3.2:1b" in orjson.loads(status.value).get("available_models", []):
                    break
                await asyncio.sleep(0.2)
        assert await admin.get(KEYS.node("node1")) is not None
        for key in (KEYS.node("node10"), KEYS.status("node10"), KEYS.status("node2"), KEYS.config("models", "evil"),
                    KEYS.epoch()):  # fmt: skip
            with pytest.raises(StoreError, match=r"(?i)permission denied"):
                await store.commit([Put(key, b"{}")])
        with pytest.raises(StoreError, match=r"(?i)permission denied"):
            await store.get(KEYS.status("node2"))  # other nodes' status is not an agent's to read
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
        await store.close()
        await admin.close()


async def test_the_router_reads_everything_and_writes_only_its_load_report(secured: EtcdServer) -> None:
    admin = store_as(secured, None)
    await admin.put(KEYS.status("node7"), b"{}")
    router = store_as(secured, "llmtune-router")
    try:
        assert (await router.get(KEYS.status("node7"))) is not None
        listed = await router.list(KEYS.root)
        assert any(item.key == KEYS.status("node7") for item in listed.items)
        reporter = LoadReporter(router, KEYS, "router-a", in_flight=lambda: {"node7": 1}, draining=lambda: [])
        assert await reporter.publish_once()  # under its own lease
        assert (await admin.get(KEYS.load("router-a"))) is not None
        await reporter.close()
        assert (await admin.get(KEYS.load("router-a"))) is None  # gone with its lease
        for key in (KEYS.status("node7"), KEYS.config("models", "evil"), KEYS.node("node7")):
            with pytest.raises(StoreError, match=r"(?i)permission denied"):
                await router.commit([Put(key, b"{}")])
    finally:
        await router.close()
        await admin.close()
