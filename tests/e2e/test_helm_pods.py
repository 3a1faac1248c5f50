"""The chart's pods as processes: the containers the Helm chart renders for production-like values
(command from the image's ENTRYPOINT and the container's args, the image's and the container's
environment, Secrets and volumes as local files) started exactly as rendered on this machine,
against a real etcd with TLS and client certificates, PostgreSQL, Redis and the Ollama simulator,
with cluster host names rewritten to loopback. The fleet must come up, every probe must answer,
and the chart's own `helm test` hook, run as a process too, must route a request."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.local import processes
from tests.fixtures.chart import RELEASE, Container, containers, find, ours, render, values
from tests.fixtures.dockerfile import final_stage
from tests.fixtures.services import EtcdServer, PostgresServer, RedisServer, free_port
from tests.helpers import model_doc, route_doc
from tests.sim.server import SimServer

pytestmark = [pytest.mark.etcd, pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVICE_HOST = re.compile(rf"//{RELEASE}-llmtune-[a-z-]+(?=:)")  # in-cluster Service names


def image_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage (what every container starts with), PATH aside."""
    env: dict[str, str] = {}
    for op, arg in final_stage():
        if op == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(arg))
    env.pop("PATH", None)
    return env


def entrypoint() -> list[str]:
    (line,) = [arg for op, arg in final_stage() if op == "ENTRYPOINT"]
    return [str(BIN / json.loads(line)[0])]  # the console script, from this environment instead of /opt/llmtune


class Pods:
    """Turns rendered containers into local processes: Secrets and volumes become folders."""

    def __init__(self, tmp: Path, secrets: dict[str, dict[str, str]], etcd_url: str) -> None:
        self.tmp, self.secrets, self.etcd_url = tmp, secrets, etcd_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def mounts(self, container: Container) -> dict[str, Path]:
        volumes = {v["name"]: v for v in container.pod.get("volumes", [])}
        out: dict[str, Path] = {}
        for mount in container.spec.get("volumeMounts", []):
            folder = self.tmp / container.component / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            secret = volumes.get(mount["name"], {}).get("secret")
            if secret:  # a Secret volume: one file per key
                for key, value in self.secrets[secret["secretName"]].items():
                    (folder / key).write_text(value)
            out[mount["mountPath"]] = folder
        return out

    def env(self, container: Container, mounts: dict[str, Path]) -> dict[str, str]:
        pod_fields = {"metadata.name": f"{RELEASE}-llmtune-ollama-0", "status.podIP": "127.0.0.1"}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **image_environment()}
        for entry in container.spec.get("env", []):
            if "value" in entry:
                value = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], entry["value"])
            elif "secretKeyRef" in entry["valueFrom"]:
                ref = entry["valueFrom"]["secretKeyRef"]
                value = self.secrets[ref["name"]][ref["key"]]
            else:
                value = pod_fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
            env[entry["name"]] = value
        for name, value in env.items():  # paths inside mounted volumes, then hosts: loopback
            for path, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == path or value.startswith(path + "/"):
                    value = str(folder) + value[len(path) :]
                    break
            value = SERVICE_HOST.sub("//127.0.0.1", value)
            env[name] = "127.0.0.1" if value == "0.0.0.0" else value
        if "LLMTUNE_STORE__ENDPOINTS" in env:  # the production cluster's members: the test's etcd
            env["LLMTUNE_STORE__ENDPOINTS"] = self.etcd_url
        env.pop("POD_IP", None)
        return env

    def start(self, container: Container) -> dict[str, str]:
        mounts = self.mounts(container)
        env = self.env(container, mounts)
        if "command" in container.spec:
            cmd = [sys.executable if container.spec["command"][0] == "python" else container.spec["command"][0],
                   *container.spec["command"][1:], *container.spec.get("args", [])]  # fmt: skip
        else:
            cmd = [*entrypoint(), *container.spec["args"]]
        log = (self.tmp / f"{container.component}-{container.spec['name']}.log").open("wb")
        self.procs.append(processes.spawn(cmd, env=env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT))
        return env

    def log(self, container: Container) -> str:
        return (self.tmp / f"{container.component}-{container.spec['name']}.log").read_text()[-3000:]

    def close(self) -> None:
        processes.stop(self.procs)


def wait_probes(pods: Pods, container: Container, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> list[str]:
    """Every probe of the container (startup, liveness, readiness) answers 2xx, as the kubelet asks it."""
    answered = []
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.spec.get(kind)
        if probe is None:
            continue
        url = f"http://127.0.0.1:{container.port(probe['httpGet']['port'])}{probe['httpGet']['path']}"
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, f"{container.spec['name']} exited:\n{pods.log(container)}"
            try:
                if 200 <= httpx.get(url, timeout=probe.get("timeoutSeconds", 1)).status_code < 400:
                    answered.append(f"{kind} {url}")
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{kind} {url} never answered:\n{pods.log(container)}"
            time.sleep(0.2)
    return answered


@pytest.fixture
def tls_etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(tls=True)
    server.start()
    yield server
    server.close()


async def test_rendered_pods_run_as_processes_and_route_a_request(
    tls_etcd: EtcdServer, postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    sim = SimServer(free_port())
    await sim.start()
    ports = {"cp": free_port(), "router": free_port(), "agent": free_port()}
    vals = values(
        "production", controlPlane={"service": {"port": ports["cp"]}}, router={"service": {"port": ports["router"]}},
        agent={"port": ports["agent"]}, ollama={"port": int(sim.url.rsplit(":", 1)[1]), "replicas": 1},
        tests={"model": ""},  # the hook then sends a plain prompt: the routes choose
    )  # fmt: skip
    docs = render(vals)
    token = base64.b64decode(find(docs, "Secret", "-admin-token")[0]["data"]["token"]).decode()
    pepper = base64.b64decode(find(docs, "Secret", "-api-keys")[0]["data"]["pepper"]).decode()
    client = {key: tls_etcd.read_cert(name) for key, name in (("ca.crt", "ca.crt"), ("tls.crt", "client.crt"),
                                                              ("tls.key", "client.key"))}  # fmt: skip
    secrets = {
        **{name: client for name in vals["store"]["tls"]["secrets"].values()},
        "llmtune-postgres": {"url": postgres_server.new_database()},
        "llmtune-redis": {"url": redis_server.url},
        f"{RELEASE}-llmtune-admin-token": {"token": token},
        f"{RELEASE}-llmtune-api-keys": {"pepper": pepper},
    }
    pods = Pods(tmp_path, secrets, tls_etcd.url)
    by_process = {ours(c.spec): c for c in containers(docs) if ours(c.spec)}
    assert set(by_process) == {"controlplane", "router", "agent"}
    try:
        answered: list[str] = []
        for process in ("controlplane", "router", "agent"):  # the order Kubernetes would make ready
            container = by_process[process]
            env = pods.start(container)
            assert all(v.startswith(("https://127.0.0.1", "http://127.0.0.1")) for k, v in env.items() if k.endswith("_URL")
                       and "://" in v and "REDIS" not in k and "DB__" not in k), env  # fmt: skip
            # (in a thread: the simulated Ollama answers on this test's event loop)
            answered += await asyncio.to_thread(wait_probes, pods, container, pods.procs[-1])
        print("\n".join(answered))
        node_name = f"{RELEASE}-llmtune-ollama-0"  # the agent is named after its pod
        pool = {"kind": "NodePool", "metadata": {"name": "a100"},  # the start-time settings the pods run with
                "spec": {"node_selector": {"pool": "a100"}, "server": {"num_parallel": 4, "max_loaded_models": 2,
                                                                         "flash_attention": True}}}  # fmt: skip
        objects = [pool, model_doc("chat", tag="llama3.1:8b"), route_doc("default", "chat")]
        api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['cp']}", headers={"Authorization": f"Bearer {token}"})
        async with api:
            resp = await api.post("/api/v1/config:apply", json={"objects": objects})
            assert resp.status_code == 200, resp.text
            revision = resp.json()["revision"]
            deadline = time.monotonic() + 60
            while True:  # the agent pulls the model and reports the revision applied
                nodes = (await api.get("/api/v1/nodes")).json()["nodes"]
                node = next((n for n in nodes if n["node"] == node_name), {})
                if node.get("health") == "ready" and (node.get("applied_revision") or 0) >= revision:
                    break
                assert time.monotonic() < deadline, json.dumps(nodes)[:2000]
                await asyncio.sleep(0.3)
            assert node["labels"] == {"pool": "a100", "zone": "eu-west-1a"} and node["restart_required"] == []
            assert node["capacity"]["gpu_memory_bytes"] == 85899345920
        # the chart's `helm test` hook, as a process: both /readyz, then one request through the router
        (hook,) = [c for c in containers(docs) if c.workload["kind"] == "Pod"]
        pods.start(hook)
        test = pods.procs[-1]
        assert await asyncio.to_thread(test.wait, 120) == 0, pods.log(hook)
        output = pods.log(hook)
        assert "/readyz 200" in output and "/api/v1/route 200" in output, output
        assert "/api/v1/keys 201" in output and "keys/helm-test-" in output, output  # its own key, revoked when done
        assert '"response"' in output.splitlines()[-2] and " 204" in output.splitlines()[-1], output
    finally:
        pods.close()
        await sim.stop()
