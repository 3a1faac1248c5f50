"""Processes for the router's latency benchmark: etcd, the control plane, one simulated Ollama node
with a fixed answer time, its agent, the router, and LiteLLM's proxy (in its own virtualenv,
installed from pinned constraints on first use) pointed at the same node."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import KEYS, ROOT, TOKEN, start_control_plane
from deploy.local import processes
from tests.fixtures.services import EtcdServer, RedisServer, free_port

LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_PIN = ROOT / "bench" / "litellm-constraints.txt"
MODEL = {"kind": "Model", "metadata": {"name": "bench"}, "spec": {
    "ollama_tag": "llama3.2:1b", "capabilities": ["chat"], "context_window": 8192, "keep_alive": "-1"}}  # fmt: skip


@dataclass
class Stack:
    sim: str
    router: str
    floor: str  # a bare HTTP pass-through proxy (bench/proxy_floor.py): what any Python proxy costs here
    pipe: str  # a TCP byte pipe: what the extra hop alone costs
    raw: str  # the router's own HTTP server and client, no routing: what its plumbing costs
    litellm: str | None
    token_s: float  # the simulator's fixed time per answer token
    pids: dict[str, int] = field(default_factory=dict)
    recording: str | None = None  # a second router that writes outcome records to Redis (bench/monitor.py)
    baseline: str | None = None  # the router of another commit (``--baseline REF``), on the same node
    baseline_ref: str = ""
    keyed: str | None = None  # a router requiring API keys, limits counted and outcome records written to Redis
    key: str = ""  # an API key for it, with every kind of limit (none reached)
    api: str = ""  # the control plane


def _wait(url: str, what: str, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited while starting")
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready at {url}")


def ensure_litellm() -> Path:
    """LiteLLM's proxy in a virtualenv of its own (its dependencies would clash with ours)."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print("installing litellm[proxy] into .venv-litellm (once, about 2 minutes)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "-c", str(LITELLM_PIN), "litellm[proxy]"]
        subprocess.run(pip, check=True)
    return binary


@contextlib.contextmanager
def running(
    *, sim_token_s: float, litellm: bool, outcomes_redis_url: str | None = None, baseline_ref: str | None = None
) -> Iterator[Stack]:
    """``baseline_ref``: also run the router of that commit (a git worktree), for before/after figures."""
    etcd = EtcdServer(progress_interval="5s")
    etcd.start()
    limits_redis = RedisServer()  # the keyed router's rate-limit counters
    limits_redis.start()
    procs: list[subprocess.Popen[bytes]] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-router-"))

    worktrees: list[Path] = []

    def spawn(name: str, cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("wb")
        proc = processes.spawn(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        pepper = logs / "pepper"
        pepper.touch(0o600)
        pepper.write_text(secrets.token_hex(32))
        keys_env = {"LLMTUNE_KEYS__PEPPER_FILE": str(pepper)}
        store = {"LLMTUNE_STORE__ENDPOINTS": etcd.url, "LLMTUNE_STORE__NAMESPACE": KEYS.namespace, "LLMTUNE_ROUTER__AUTH": "off"}
        cp, api = start_control_plane({"LLMTUNE_STORE__ENDPOINTS": etcd.url, **keys_env})
        procs.append(cp)
        sim_port, router_port = free_port(), free_port()
        sim_env = {**os.environ, "SIM_TOKEN_S": str(sim_token_s), "SIM_LOAD_S": "0", "OLLAMA_NUM_PARALLEL": "64"}
        sim = spawn("sim", [sys.executable, "-m", "tests.sim", "--port", str(sim_port)], sim_env)
        sim_url = f"http://127.0.0.1:{sim_port}"
        _wait(f"{sim_url}/api/version", "the simulator", proc=sim)
        agent_env = {**os.environ, **store, "LLMTUNE_AGENT__NODE": "bench-node", "LLMTUNE_AGENT__OLLAMA_URL": sim_url,
                     "LLMTUNE_AGENT__PORT": "0", "LLMTUNE_AGENT__MAX_PARALLEL": "64"}  # fmt: skip
        spawn("agent", [sys.executable, "-m", "agents.sidecar"], agent_env)
        router = spawn(
            "router", [sys.executable, "-m", "router"], {**os.environ, **store, "LLMTUNE_ROUTER__PORT": str(router_port)}
        )
        router_url = f"http://127.0.0.1:{router_port}"
        recording = None
        if outcomes_redis_url:
            port = free_port()
            env = {**os.environ, **store, "LLMTUNE_ROUTER__PORT": str(port)}
            env["LLMTUNE_ROUTER__OUTCOMES_REDIS_URL"] = outcomes_redis_url
            recording_proc = spawn("router-recording", [sys.executable, "-m", "router"], env)
            recording = f"http://127.0.0.1:{port}"
        keyed_port = free_port()
        keyed_env = {**os.environ, **store, **keys_env, "LLMTUNE_ROUTER__PORT": str(keyed_port)}
        keyed_env["LLMTUNE_ROUTER__AUTH"] = "required"
        keyed_env["LLMTUNE_ROUTER__LIMITS_REDIS_URL"] = limits_redis.url
        keyed_env["LLMTUNE_ROUTER__OUTCOMES_REDIS_URL"] = limits_redis.url  # usage: an outcome record per request
        keyed_proc = spawn("router-keyed", [sys.executable, "-m", "router"], keyed_env)
        keyed = f"http://127.0.0.1:{keyed_port}"
        baseline = None
        if baseline_ref:
            worktree = logs / "baseline"
            git = ["git", "-C", str(ROOT)]
            subprocess.run([*git, "worktree", "add", "--detach", "-q", str(worktree), baseline_ref], check=True)
            worktrees.append(worktree)
            port = free_port()
            env = {**os.environ, **store, "LLMTUNE_ROUTER__PORT": str(port), "PYTHONPATH": str(worktree)}
            baseline_proc = spawn("router-baseline", [sys.executable, "-m", "router"], env, cwd=worktree)
            baseline = f"http://127.0.0.1:{port}"
        _wait(f"{api}/readyz", "the control plane", proc=cp)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        httpx.post(f"{api}/api/v1/config:apply", json={"objects": [MODEL]}, headers=headers).raise_for_status()
        limited = {"limits": {"requests_per_minute": 10**9, "tokens_per_minute": 10**12, "concurrent": 10**5},
                   "budgets": {"tokens_per_day": 10**12}}  # fmt: skip  (every kind counted, none reached)
        issued = httpx.post(f"{api}/api/v1/keys", json={"name": "bench", "tenant": "bench", **limited}, headers=headers)
        key = issued.raise_for_status().json()["secret"]
        _wait(f"{keyed}/readyz", "the router with API keys", proc=keyed_proc)
        _wait(f"{router_url}/readyz", "the router", proc=router)
        if recording:
            _wait(f"{recording}/readyz", "the recording router", proc=recording_proc)
        if baseline:
            _wait(f"{baseline}/readyz", "the baseline router", proc=baseline_proc)
        deadline = time.monotonic() + 60
        for url in filter(None, (router_url, recording, baseline, keyed)):
            while httpx.get(f"{url}/api/tags", headers={"x-api-key": key}).json().get("models") in (None, []):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the router never saw the node; logs in {logs}")
                time.sleep(0.2)
        ports = {mode: free_port() for mode in ("http", "tcp", "raw")}
        floors = {mode: spawn(mode, [sys.executable, "-m", "bench.proxy_floor", mode, sim_url, str(port)], dict(os.environ))
                  for mode, port in ports.items()}  # fmt: skip
        url = {mode: f"http://127.0.0.1:{port}" for mode, port in ports.items()}
        stack = Stack(sim_url, router_url, url["http"], url["tcp"], url["raw"], None, sim_token_s,
                      {"router": router.pid, "sim": sim.pid, **{m: p.pid for m, p in floors.items()}}, recording)  # fmt: skip
        stack.api, stack.pids["controlplane"] = api, cp.pid
        if recording:
            stack.pids["recording"] = recording_proc.pid
        if baseline:
            stack.baseline, stack.baseline_ref, stack.pids["baseline"] = baseline, baseline_ref or "", baseline_proc.pid
        stack.keyed, stack.key, stack.pids["keyed"] = keyed, key, keyed_proc.pid
        time.sleep(1.0)  # the floor proxy has no readiness endpoint: uvicorn starts in well under a second
        if litellm:
            stack.litellm = _start_litellm(spawn, sim_url, logs)
            stack.pids["litellm"] = procs[-1].pid
        yield stack
    finally:
        processes.stop(procs)
        etcd.close()
        limits_redis.close()
        for tree in worktrees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


LITELLM_KEY = "sk-bench-" + secrets.token_hex(16)  # LiteLLM's master key: its proxy then checks every request's key


def _start_litellm(spawn, sim_url: str, logs: Path) -> str:  # type: ignore[no-untyped-def]
    """LiteLLM's proxy with its master key set, so it authenticates each request as our keyed
    router does. Its virtual keys (per-key budgets and limits) need its Prisma database client,
    whose query engine is downloaded at first use from binaries.prisma.sh: not possible on a
    machine that reaches package registries only, so the master key is the closest comparison."""
    binary = ensure_litellm()
    config = logs / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n"
        f"      model: ollama_chat/llama3.2:1b\n      api_base: {sim_url}\n"
        "litellm_settings:\n  telemetry: false\n"
        "general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n"
    )
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY}
    proc = spawn("litellm", [str(binary), "--config", str(config), "--port", str(port), "--num_workers", "1"], env)
    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/health/liveliness", "LiteLLM", timeout_s=120, proc=proc)
    return url
