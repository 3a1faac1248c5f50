"""Live-tuning benchmark: ``PUT /api/v1/tune?wait=applied`` across 50 agents on simulated Ollama
nodes, until every node reports the new revision applied. Baseline, alternated in the same run:
the same tune without waiting (the write alone). Two cases: a derived model (each node re-creates
it with /api/create and warms it again) and a plain model (options travel with requests, so the
nodes only confirm). Prints p50/p95/p99, the ratio, CPU per tune and peak RSS of each process.

    python bench/tune.py [--tunes 100] [--agents 50] [--hosts 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import KEYS, ROOT, TOKEN, cpu_seconds, pct, peak_rss_mb, run_loop, start_control_plane, wait_ready
from deploy.local import processes
from tests.fixtures.services import EtcdServer, free_port, free_port_range

MODELS = [
    {"kind": "Model", "metadata": {"name": "derived"}, "spec": {
        "ollama_tag": "bench-assistant:v1", "base": "llama3.1:8b", "capabilities": ["chat"], "context_window": 8192,
        "system_prompt": "Be brief.", "options": {"temperature": 0.5}, "placement": {"node_selector": {"pool": "bench"}}}},
    {"kind": "Model", "metadata": {"name": "plain"}, "spec": {
        "ollama_tag": "llama3.1:8b", "capabilities": ["chat"], "context_window": 8192, "options": {"temperature": 0.5},
        "placement": {"node_selector": {"pool": "bench"}}}},
]  # fmt: skip


LOGS = Path(tempfile.mkdtemp(prefix="bench-tune-"))


def spawn(cmd: list[str], name: str) -> subprocess.Popen[str]:
    log = (LOGS / f"{name}.log").open("w")
    return processes.spawn(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)


async def until_ready(client: httpx.AsyncClient, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = (await client.get("/api/v1/models/status")).json()
        if status["models"] and all(m["ready_nodes"] == n for m in status["models"]):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the fleet did not become ready: {status['nodes'][:3]}")


async def bench(
    api: str, cp_pid: int, *, tunes: int, agents: int, hosts: list[int], cases: list[str], etcd_pid: int
) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        await wait_ready(client)
        assert (await client.post("/api/v1/config:apply", json={"objects": MODELS})).status_code == 200
        await until_ready(client, agents)
        for name in cases:
            waited, written, incomplete = [], [], 0
            cpu0, hosts0, etcd0 = cpu_seconds(cp_pid), sum(cpu_seconds(h) for h in hosts), cpu_seconds(etcd_pid)
            for i in range(tunes):
                for wait in (True, False):
                    body = {"model": name, "options": {"temperature": round(0.1 + (i % 40) * 0.01 + (0.5 if wait else 0), 3)}}
                    started = time.perf_counter()
                    resp = await client.put("/api/v1/tune", params={"wait": "applied", "timeout": 10} if wait else {}, json=body)
                    elapsed = (time.perf_counter() - started) * 1000
                    data = resp.json()
                    if wait:
                        waited.append(elapsed)
                        if not data["complete"]:
                            incomplete += 1
                            late = [n for n in data["nodes"] if n["state"] != "applied"]
                            print(f"  not confirmed after {elapsed:.0f} ms: {late[:3]}", flush=True)
                    else:
                        written.append(elapsed)  # then let the nodes settle, untimed, before the next pair
                        await client.put("/api/v1/tune", params={"wait": "applied", "timeout": 10}, json=body)
            agents_cpu = (sum(cpu_seconds(h) for h in hosts) - hosts0) / (3 * tunes) * 1000
            etcd_cpu = (cpu_seconds(etcd_pid) - etcd0) / (3 * tunes) * 1000
            cp_cpu = (cpu_seconds(cp_pid) - cpu0) / (3 * tunes) * 1000
            if incomplete:
                print(f"{name}: {incomplete} tune(s) not confirmed by every node in 10 s; agent logs in {LOGS}")
            out[name] = {"waited": waited, "written": written, "cpu": [cp_cpu, agents_cpu, etcd_cpu], "incomplete": [incomplete]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tunes", type=int, default=100)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--hosts", type=int, default=2, help="processes the agents are spread over")
    parser.add_argument("--cases", default="derived,plain", help="which models to tune: derived, plain")
    args = parser.parse_args()
    etcd = EtcdServer(progress_interval="5s")
    etcd.start()
    sim_port = free_port_range(args.agents + 1)
    procs: list[subprocess.Popen[str]] = []
    try:
        sims = spawn([sys.executable, "-m", "tests.sim", "--port", str(sim_port), "--count", str(args.agents + 1)], "sim")
        procs.append(sims)
        for _ in range(args.agents + 1):
            assert sims.stdout is not None and "listening" in sims.stdout.readline()
        per = -(-args.agents // args.hosts)
        hosts = []
        for h in range(args.hosts):
            count = min(per, args.agents - h * per)
            cmd = [sys.executable, "bench/agent_host.py", "--etcd", etcd.url, "--namespace", KEYS.namespace,
                   "--sim-port", str(sim_port), "--first", str(h * per), "--count", str(count)]  # fmt: skip
            hosts.append(spawn(cmd, f"agents-{h}"))
        procs += hosts
        # One agent as deployed (its own process, metrics endpoint on), on a node no tuned model is placed
        # on: it follows every change, and its memory is what the 100 MB budget is about.
        solo_env = {**os.environ, "LLMTUNE_STORE__ENDPOINTS": etcd.url, "LLMTUNE_STORE__NAMESPACE": KEYS.namespace,
                    "LLMTUNE_AGENT__NODE": "solo", "LLMTUNE_AGENT__LABELS": "pool=solo", "LLMTUNE_AGENT__PORT": str(free_port()),
                    "LLMTUNE_AGENT__OLLAMA_URL": f"http://127.0.0.1:{sim_port + args.agents}"}  # fmt: skip
        solo = processes.spawn([sys.executable, "-m", "agents.sidecar"], cwd=ROOT, env=solo_env, stderr=subprocess.DEVNULL)
        procs.append(solo)  # type: ignore[arg-type]
        cp, api = start_control_plane({"LLMTUNE_STORE__ENDPOINTS": etcd.url})
        procs.append(cp)  # type: ignore[arg-type]
        for host in hosts:
            assert host.stdout is not None and host.stdout.readline().strip() == "ready"
        results = run_loop(
            bench(
                api,
                cp.pid,
                tunes=args.tunes,
                agents=args.agents,
                hosts=[h.pid for h in hosts],
                cases=args.cases.split(","),
                etcd_pid=etcd.pid,
            )
        )
        rss = {"control plane": peak_rss_mb(cp.pid), "one agent process": peak_rss_mb(solo.pid)}
        rss["simulator"] = peak_rss_mb(sims.pid)
        report(results, args, rss=rss, host_rss=[peak_rss_mb(h.pid) for h in hosts])
    finally:
        processes.stop(procs)  # all at once, SIGKILL after 10 s, never raising: etcd below is stopped too
        etcd.close()


def report(
    results: dict[str, dict[str, list[float]]], args: argparse.Namespace, *, rss: dict[str, float], host_rss: list[float]
) -> None:
    print(f"tune: {args.tunes} tunes per case (alternating with the write-only baseline), {args.agents} agents in "
          f"{args.hosts} processes, {args.agents} simulated Ollama nodes in one process, real etcd, SQLite audit")  # fmt: skip
    print(f"{'ms':58s}{'p50':>9s}{'p95':>9s}{'p99':>9s}")
    for name, r in results.items():
        what = "/api/create on every node" if name == "derived" else "options travel with requests: nodes only confirm"
        print(f"{name} model ({what})")
        for label, key in (
            ("  PUT /tune?wait=applied -> every node applied", "waited"),
            ("  baseline: PUT /tune (write only)", "written"),
        ):
            v = r[key]
            print(f"{label:58s}{pct(v, 50):9.2f}{pct(v, 95):9.2f}{pct(v, 99):9.2f}")
        ratio = pct(r["waited"], 50) / pct(r["written"], 50)
        goal = "met" if pct(r["waited"], 99) < 100 else "NOT met"
        print(f"  applied/written p50 x{ratio:.2f}; CPU per tune: control plane {r['cpu'][0]:.1f} ms, "
              f"agents {r['cpu'][1]:.1f} ms ({r['cpu'][1] / args.agents:.2f} each), etcd {r['cpu'][2]:.1f} ms; "
              f"incomplete: {int(r['incomplete'][0])}; goal p99 < 100 ms: {goal}")  # fmt: skip
    hosts = ", ".join(f"{m:.0f}" for m in host_rss)
    per_agent = max(host_rss) / -(-args.agents // args.hosts)
    print(f"peak RSS MB: {'; '.join(f'{k} {v:.0f}' for k, v in rss.items())}; "
          f"agent hosts {hosts} (~{per_agent:.1f} per extra agent); budget per agent process 100 MB")  # fmt: skip


if __name__ == "__main__":
    main()
