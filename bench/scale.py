"""Scale benchmark: the control plane with 10,000 configuration objects. Loads them through the
API in change sets of 100, then measures a single-object write and a full list at that size
against the same operations measured first at 10 objects (the baseline, same run), and the
control plane's memory. Budget (DESIGN.md): control plane under 300 MB with 10,000 objects.

    python bench/scale.py [--objects 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import TOKEN, pct, peak_rss_mb, rss_mb, run_loop, running_stack, wait_ready


def model(name: str, ctx: int = 8192) -> dict[str, object]:
    return {
        "kind": "Model",
        "metadata": {"name": name, "labels": {"team": "bench"}},
        "spec": {"ollama_tag": f"{name}:latest", "capabilities": ["chat"], "context_window": ctx, "options": {"num_ctx": 4096}},
    }


async def timed_writes(client: httpx.AsyncClient, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        resp = await client.put("/api/v1/config/models/probe", json=model("probe", 4096 + i))
        resp.raise_for_status()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def timed_lists(client: httpx.AsyncClient, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        (await client.get("/api/v1/config/models")).raise_for_status()
        out.append((time.perf_counter() - start) * 1000)
    return out


@dataclass
class Result:
    write_small: list[float] = field(default_factory=list)
    list_small: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    write_large: list[float] = field(default_factory=list)
    list_large: list[float] = field(default_factory=list)
    rss_small: float = 0.0
    rss_large: float = 0.0


async def measure(api: str, pid: int, objects: int) -> Result:
    r = Result()
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        await wait_ready(client)
        await client.post("/api/v1/config:apply", json={"objects": [model(f"seed-{i}") for i in range(10)]})
        r.write_small = await timed_writes(client, 100)
        r.list_small = await timed_lists(client, 20)
        r.rss_small = rss_mb(pid)
        for chunk in range(0, objects, 100):
            start = time.perf_counter()
            body = {"objects": [model(f"m-{i:05d}") for i in range(chunk, min(chunk + 100, objects))]}
            (await client.post("/api/v1/config:apply", json=body)).raise_for_status()
            r.load.append((time.perf_counter() - start) * 1000)
        r.write_large = await timed_writes(client, 100)
        r.list_large = await timed_lists(client, 5)
        r.rss_large = rss_mb(pid)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    args = parser.parse_args()
    with running_stack() as stack:
        r = run_loop(measure(stack.api, stack.control_plane.pid, args.objects))
        peak = peak_rss_mb(stack.control_plane.pid)

    def row(name: str, values: list[float]) -> str:
        return f"{name:48s} {statistics.median(values):9.2f} {pct(values, 95):9.2f} {pct(values, 99):9.2f}"

    print(f"scale: control plane with {args.objects} objects (etcd 3.5.1, SQLite audit)")
    print(f"{'ms':48s} {'p50':>9s} {'p95':>9s} {'p99':>9s}")
    print(row("PUT one model, 10 objects stored (baseline)", r.write_small))
    print(row(f"PUT one model, {args.objects} objects stored", r.write_large))
    print(row("apply 100 new models in one change set", r.load))
    print(row("GET all models, 10 stored", r.list_small))
    print(row(f"GET all models, {args.objects} stored", r.list_large))
    ratio = statistics.median(r.write_large) / statistics.median(r.write_small)
    print(f"write p50 ratio large/small: x{ratio:.2f}")
    print(f"control plane RSS: {r.rss_small:.0f} MB at 10 objects, {r.rss_large:.0f} MB at {args.objects}; peak {peak:.0f} MB")
    print(f"budget < 300 MB with {args.objects} objects: {'met' if peak < 300 else 'NOT met'}")


if __name__ == "__main__":
    main()
