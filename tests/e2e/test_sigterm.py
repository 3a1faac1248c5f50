"""Every long-running process of the project stops on SIGTERM within a bound while it is busy: the
router with answers streaming through it, an agent supervising its own (simulated) Ollama that is
mid-answer, the fine-tuning worker, and the control plane with watch streams open. An agent killed
outright takes its supervised Ollama with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from controlplane.store.keys import KeySpace
from deploy.local import processes
from tests.e2e.test_llmctl import ROOT, TOKEN, control_plane_process
from tests.fixtures.services import EtcdServer, RedisServer, free_port

pytestmark = pytest.mark.etcd
GRACE_S = 2.0  # what the test gives each process (production default: 10 s)
BOUND_S = GRACE_S + 6  # the process is gone by then, SIGKILL not needed


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer; {log.read_text()[-3000:]}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def _hold(url: str, *, json: dict[str, object] | None = None, headers: dict[str, str] | None = None) -> threading.Thread:
    """A client that keeps a streamed answer open, reading slowly, until the server goes away."""

    def run() -> None:
        try:
            with httpx.stream("POST" if json else "GET", url, json=json, headers=headers, timeout=60) as resp:
                for _ in resp.iter_bytes():
                    time.sleep(0.05)
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_each_process_stops_on_sigterm_in_time_under_load(
    etcd_server: EtcdServer, redis_server: RedisServer, keys: KeySpace, tmp_path: Path
) -> None:
    store = {"LLMTUNE_STORE__ENDPOINTS": etcd_server.url, "LLMTUNE_STORE__NAMESPACE": keys.namespace}
    grace = {"LLMTUNE_API__SHUTDOWN_GRACE_S": str(GRACE_S)}
    with control_plane_process(etcd_server.url, keys.namespace, tmp_path, **grace) as (api, cp_env):  # stopped in the next test
        procs: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}

        def start(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
            logs[name] = tmp_path / f"{name}.log"
            procs[name] = processes.spawn(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=logs[name].open("wb"),
                                          stderr=subprocess.STDOUT)  # fmt: skip
            return procs[name]

        try:
            sim_port, agent_port, router_port = free_port(), free_port(), free_port()
            ollama_cmd = f"{sys.executable} -m tests.sim --port {sim_port}"
            agent = start("agent", [sys.executable, "-m", "agents.sidecar"], store | {
                "LLMTUNE_AGENT__NODE": "n1", "LLMTUNE_AGENT__OLLAMA_URL": f"http://127.0.0.1:{sim_port}",
                "LLMTUNE_AGENT__OLLAMA_COMMAND": ollama_cmd, "LLMTUNE_AGENT__PORT": str(agent_port),
                "LLMTUNE_AGENT__PROBE_INTERVAL_S": "0.5",
            })  # fmt: skip
            router = start("router", [sys.executable, "-m", "router"], store | {
                "LLMTUNE_ROUTER__PORT": str(router_port), "LLMTUNE_ROUTER__SHUTDOWN_GRACE_S": str(GRACE_S),
                "LLMTUNE_ROUTER__MAX_BODY_BYTES": "65536", "LLMTUNE_ROUTER__AUTH": "off",
            })  # fmt: skip
            worker = start("worker", [sys.executable, "-m", "agents.finetune"], {
                "LLMTUNE_FINETUNE__REDIS_URL": redis_server.url, "LLMTUNE_DB__URL": cp_env["LLMTUNE_DB__URL"],
            })  # fmt: skip
            model = {"kind": "Model", "metadata": {"name": "chat"},
                     "spec": {"ollama_tag": "llama3.2:1b", "capabilities": ["chat"], "context_window": 8192}}  # fmt: skip
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.put(f"{api}/api/v1/config/models/chat", json=model, headers=auth).status_code == 200
            router_url = f"http://127.0.0.1:{router_port}"
            _wait_http(f"{router_url}/healthz", router, logs["router"])
            big = httpx.post(f"{router_url}/api/chat", content=b"{" + b" " * 100_000 + b"}")
            assert big.status_code == 413 and "65536" in big.text  # the router's HTTP limits are settings
            ask = {"model": "chat", "messages": [{"role": "user", "content": "tell me everything"}],
                   "options": {"num_predict": 2000}}  # fmt: skip
            deadline = time.monotonic() + 40
            while httpx.post(f"{router_url}/api/chat", json=ask | {"stream": False, "options": {"num_predict": 1}},
                             timeout=10).status_code != 200:  # fmt: skip
                assert time.monotonic() < deadline, logs["agent"].read_text()[-3000:]
                time.sleep(0.3)
            sims = _children(agent.pid)
            assert len(sims) == 1, "the agent supervises one simulated Ollama"

            # load: answers streaming through the router and straight from the node, stalled mid-answer
            pause = {"path": "/api/chat", "pause_after": 3, "pause_s": 120, "times": -1}
            assert httpx.post(f"http://127.0.0.1:{sim_port}/sim/faults", json=pause).status_code == 204
            held = [_hold(f"{router_url}/api/chat", json=ask) for _ in range(4)]
            held += [_hold(f"http://127.0.0.1:{sim_port}/api/chat", json=ask | {"model": "llama3.2:1b"}) for _ in range(2)]
            time.sleep(1.5)
            assert all(t.is_alive() for t in held)

            sent = time.monotonic()
            for proc in (router, agent, worker):
                proc.send_signal(signal.SIGTERM)
            took: dict[str, float] = {}
            while time.monotonic() - sent < BOUND_S + 5 and len(took) < 3:
                for name, proc in (("router", router), ("agent", agent), ("worker", worker)):
                    if name not in took and proc.poll() is not None:
                        took[name] = time.monotonic() - sent
                time.sleep(0.05)
            for name in ("router", "agent", "worker"):
                assert took.get(name, 99) < BOUND_S, (name, took, logs[name].read_text()[-2000:])
                assert procs[name].returncode in (0, -signal.SIGTERM), (name, procs[name].returncode)
            assert not any(Path(f"/proc/{pid}").exists() for pid in sims), "the supervised Ollama outlived its agent"
        finally:
            processes.stop(procs.values())


def test_the_control_plane_stops_in_time_with_watch_streams_open(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> None:
    """Open watch streams do not hold the exit: uvicorn's graceful shutdown is bounded by shutdown_grace_s."""
    with control_plane_process(etcd_server.url, keys.namespace, tmp_path, LLMTUNE_API__SHUTDOWN_GRACE_S=str(GRACE_S)) as (
        api, _env,
    ):  # fmt: skip
        auth = {"Authorization": f"Bearer {TOKEN}"}
        held = [_hold(f"{api}/api/v1/watch", headers=auth) for _ in range(3)]
        for _ in range(20):
            httpx.get(f"{api}/api/v1/config/models", headers=auth)
        time.sleep(0.5)
        assert all(t.is_alive() for t in held)
        (pid,) = [p for p in _children(os.getpid()) if "controlplane.api" in Path(f"/proc/{p}/cmdline").read_text()]
        sent = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists() and _zombie(pid) is False and time.monotonic() - sent < BOUND_S + 5:
            time.sleep(0.05)
        assert time.monotonic() - sent < BOUND_S, "the control plane did not stop in time"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_an_agent_killed_outright_takes_its_ollama_with_it(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> None:
    sim_port = free_port()
    env = {**os.environ, "LLMTUNE_STORE__ENDPOINTS": etcd_server.url, "LLMTUNE_STORE__NAMESPACE": keys.namespace,
           "LLMTUNE_AGENT__NODE": "n2", "LLMTUNE_AGENT__OLLAMA_URL": f"http://127.0.0.1:{sim_port}",
           "LLMTUNE_AGENT__OLLAMA_COMMAND": f"{sys.executable} -m tests.sim --port {sim_port}"}  # fmt: skip
    log = tmp_path / "agent.log"
    agent = processes.spawn([sys.executable, "-m", "agents.sidecar"], env=env, cwd=ROOT, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{sim_port}/api/version", agent, log)
        (sim,) = _children(agent.pid)
        agent.kill()
        agent.wait(5)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{sim}").exists() and not _zombie(sim) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{sim}").exists() or _zombie(sim), "the supervised Ollama outlived its agent"
    finally:
        processes.stop([agent])
