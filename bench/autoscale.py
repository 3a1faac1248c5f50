"""The autoscaler under a load step, its end, and an oscillating load, against a fixed placement of
the same fleet (every node holds the model: today's default).

Six simulated Ollama nodes (a few seconds to load a model, 4 parallel slots each) behind their
agents, the control plane (its autoscaler leading, with windows shortened so a run takes minutes:
stable 10 s, panic 2 s, scale-down delay 20 s, a tick a second) and the router, in this process;
the load generator in its own process keeps a target number of requests in flight:

  base 4 (20 s) -> step x5 to 20 (30 s) -> back to 4 (40 s) -> 4 <-> 20 every 8 s (48 s)

Printed per mode: the time from the step to enough ready replicas (ceil(20 / 4) = 5), requests that
waited for a slot and for how long (p50/max, the router's queue), 503s, requests that failed during
the scale-down (goal 0), replicas changes during the oscillation, and the router's RSS.

    python bench/autoscale.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.common import peak_rss_mb
from controlplane.store.keys import KeySpace
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc
from tests.sim.engine import SimSettings

NODES = 6
SLOTS = 4
FAST = {"every_s": 1.0, "stable_window_s": 10.0, "panic_window_s": 2.0, "scale_down_delay_s": 20.0, "stale_after_s": 6.0}
PHASES = [("base", 4, 20.0), ("step", 20, 30.0), ("down", 4, 40.0)] + [
    (f"swing-{i}", 20 if i % 2 == 0 else 4, 8.0) for i in range(6)
]  # fmt: skip
QUICK = [("base", 4, 8.0), ("step", 20, 20.0), ("down", 4, 30.0)] + [
    (f"swing-{i}", 20 if i % 2 == 0 else 4, 5.0) for i in range(4)
]  # fmt: skip


def generate(url: str, phases: list[tuple[str, int, float]], out: str) -> None:
    """The load generator (its own process): keeps ``target`` requests in flight per phase."""

    async def main() -> None:
        records: list[dict[str, Any]] = []
        started = time.monotonic()
        target = {"n": 0}

        async def worker(i: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                while True:
                    if i >= target["n"]:
                        await asyncio.sleep(0.05)
                        continue
                    t0 = time.monotonic()
                    body = {"model": "m", "prompt": "tell me a story " * 10, "stream": False, "options": {"num_predict": 12}}
                    try:
                        resp = await c.post("/api/generate", json=body)
                        status = resp.status_code
                    except httpx.HTTPError:
                        status = 0
                    records.append({"t": t0 - started, "s": status, "ms": (time.monotonic() - t0) * 1000})

        workers = [asyncio.create_task(worker(i)) for i in range(max(p[1] for p in phases))]
        for _name, n, seconds in phases:
            target["n"] = n
            await asyncio.sleep(seconds)
        target["n"] = 0
        await asyncio.sleep(3)
        for w in workers:
            w.cancel()
        await asyncio.to_thread(Path(out).write_text, json.dumps(records))

    asyncio.run(main())


async def run(mode: str, phases: list[tuple[str, int, float]]) -> dict[str, Any]:
    etcd = EtcdServer()
    etcd.start()
    tmp = Path(tempfile.mkdtemp(prefix=f"autoscale-{mode}-"))
    f = Fleet(etcd.url, KeySpace(f"bench-{mode}"), tmp)
    try:
        await f.start_control_plane(autoscaler=FAST)
        for i in range(NODES):
            await f.add_node(f"node-{i}", sim=SimSettings(token_s=0.05, load_s=3.0, num_parallel=SLOTS),
                             agent={"drain_s": 15, "max_parallel": SLOTS})  # fmt: skip
        placement = {"autoscale": True, "min_replicas": 1, "max_replicas": NODES} if mode == "autoscaled" else {}
        model = model_doc("m", tag="llama3.2:1b", placement=placement)
        resp = await f.api.post("/api/v1/config:apply", json={"objects": [model]})
        assert resp.status_code == 200, resp.text
        url = await f.start_router()

        async def settled() -> bool:
            nodes = f.router.feed.table.nodes.get("m", ())
            return len(nodes) == (1 if mode == "autoscaled" else NODES) and all("llama3.2:1b" in n.loaded for n in nodes)

        await f.eventually(settled, timeout_s=60)
        out = tmp / "records.json"
        gen = multiprocessing.get_context("spawn").Process(target=generate, args=(url, phases, str(out)))
        started = time.monotonic()
        gen.start()
        replicas: list[tuple[float, int]] = []
        while gen.is_alive():
            ready = sum("llama3.2:1b" in n.loaded for n in f.router.feed.table.nodes.get("m", ()))
            if not replicas or replicas[-1][1] != ready:
                replicas.append((time.monotonic() - started, ready))
            await asyncio.sleep(0.2)
        records = json.loads(await asyncio.to_thread(out.read_text))
        metrics = (await httpx.AsyncClient().get(f"{url}/metrics")).text
        return summarize(mode, phases, records, replicas, metrics, rss=peak_rss_mb())
    finally:
        await f.close()
        etcd.close()


def summarize(
    mode: str, phases: list[tuple[str, int, float]], records: list[dict[str, Any]], replicas: list[tuple[float, int]],
    metrics: str, *, rss: float,
) -> dict[str, Any]:  # fmt: skip
    bounds, t = {}, 0.0
    for name, _n, seconds in phases:
        bounds[name] = (t, t + seconds)
        t += seconds
    step_at = bounds["step"][0]
    needed = math.ceil(20 / SLOTS)
    at_step = next((n for at, n in reversed(replicas) if at <= step_at), 0)
    enough = 0.0 if at_step >= needed else next((at - step_at for at, n in replicas if at >= step_at and n >= needed), None)
    down = bounds["down"]
    swings = [b for name, b in bounds.items() if name.startswith("swing")]
    swing_from, swing_to = swings[0][0], swings[-1][1]
    changes = sum(1 for at, _ in replicas if swing_from <= at <= swing_to)
    waited = _histogram(metrics, "llmtune_router_queue_wait_seconds")
    latencies = [r["ms"] for r in records if r["s"] == 200]
    return {
        "mode": mode,
        "requests": len(records),
        "ok": sum(r["s"] == 200 for r in records),
        "503": sum(r["s"] == 503 for r in records),
        "failed_in_scale_down": sum(r["s"] != 200 for r in records if down[0] <= r["t"] < down[1]),
        "enough_replicas_s": None if enough is None else round(enough, 1),
        "waited": waited["count"],
        "waited_mean_ms": round(1000 * waited["sum"] / waited["count"], 1) if waited["count"] else 0.0,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 1) if latencies else None,
        "replica_changes_oscillating": changes,
        "max_replicas_seen": max((n for _, n in replicas), default=0),
        "process_rss_mb": round(rss, 1),  # control plane, agents, router and sims together
    }


def _histogram(metrics: str, name: str) -> dict[str, float]:
    out = {"count": 0.0, "sum": 0.0}
    for line in metrics.splitlines():
        for part in ("count", "sum"):
            if line.startswith(f"{name}_{part}{{"):
                out[part] += float(line.rsplit(" ", 1)[1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter phases (a smoke run)")
    args = parser.parse_args()
    phases = QUICK if args.quick else PHASES
    print("phases:", ", ".join(f"{name} {n} in flight {s:g} s" for name, n, s in phases))
    print(f"{NODES} simulated nodes, {SLOTS} slots each, 3 s to load a model; autoscaler windows {FAST}")
    rows = [asyncio.run(run(mode, phases)) for mode in ("autoscaled", "fixed")]
    keys = [k for k in rows[0] if k != "mode"]
    print(f"{'':28}" + "".join(f"{r['mode']:>14}" for r in rows))
    for key in keys:
        print(f"{key:28}" + "".join(f"{r[key]!s:>14}" for r in rows))
    auto, fixed = rows
    print(f"autoscaled: {auto['enough_replicas_s']} s from the step to {math.ceil(20 / SLOTS)} ready replicas; "
          f"{auto['failed_in_scale_down']} request(s) failed while scaling down; {auto['replica_changes_oscillating']} "
          f"replica changes while the load swung; p50 {auto['p50_ms']} ms vs {fixed['p50_ms']} ms with every node "
          f"holding the model")  # fmt: skip


if __name__ == "__main__":
    main()
