"""Helpers shared by the benchmarks: a real etcd and control plane on free ports, percentiles,
CPU and memory readings of a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controlplane.store.base import ConfigStore  # noqa: E402
from controlplane.store.etcd import EtcdConfig, EtcdStore  # noqa: E402
from controlplane.store.keys import KeySpace  # noqa: E402
from controlplane.store.zookeeper import ZooKeeperConfig, ZooKeeperStore  # noqa: E402
from deploy.local import processes  # noqa: E402
from tests.fixtures.services import EtcdServer, ZooKeeperServer, free_port  # noqa: E402

TOKEN = "bench-token"
KEYS = KeySpace("bench")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot; stolen time counts as busy."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # less idle and iowait


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 20.0) -> None:
    """Poll ``/readyz`` until the control plane serves (it needs etcd, the database and its informer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the control plane did not become ready")


def start_control_plane(store_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "LLMTUNE_STORE__NAMESPACE": KEYS.namespace,
        "LLMTUNE_DB__URL": f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-')) / 'meta.db'}",
        "LLMTUNE_AUTH__BOOTSTRAP_TOKEN": TOKEN,
        "LLMTUNE_API__PORT": str(port),
        **store_env,  # and any other setting a benchmark gives (its own database)
    }
    cmd = [sys.executable, "-m", "controlplane.api"]
    proc = processes.spawn(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


@dataclass
class Stack:
    backend: str
    open_store: Callable[[], ConfigStore]  # a store client on the same backend, for in-process informers
    control_plane: subprocess.Popen[bytes]
    api: str


@contextlib.contextmanager
def running_stack(backend: str = "etcd") -> Iterator[Stack]:
    """A real store server (etcd or ZooKeeper) and a control plane on it, stopped again on exit."""
    server: EtcdServer | ZooKeeperServer
    if backend == "etcd":
        server = EtcdServer(progress_interval="5s")
        url = server.url
        env = {"LLMTUNE_STORE__ENDPOINTS": url}

        def open_store() -> ConfigStore:
            return EtcdStore(EtcdConfig(endpoints=(url,)))
    else:
        server = ZooKeeperServer(tick_ms=2000)  # ZooKeeper's default tick
        hosts = server.hosts
        env = {
            "LLMTUNE_STORE__BACKEND": "zookeeper",
            "LLMTUNE_STORE__ZOOKEEPER_HOSTS": hosts,
            "LLMTUNE_STORE__ZOOKEEPER_ROOT": "/bench",
        }

        def open_store() -> ConfigStore:
            return ZooKeeperStore(ZooKeeperConfig(hosts=hosts, root="/bench"))

    server.start()
    cp, api = start_control_plane(env)
    try:
        yield Stack(backend, open_store, cp, api)
    finally:
        processes.stop([cp])
        server.close()


T = TypeVar("T")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # the loop the services run on (uvicorn picks it too)

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
