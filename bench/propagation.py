"""Propagation benchmark: a write through the REST API until 100 informers in this process hold
the new revision, against a baseline of the same store transaction made directly (no API, no
audit), alternating the two so machine drift hits both; on etcd and on ZooKeeper, side by
side. Prints p50/p99, the ratio, CPU per write and peak RSS of each process. Real servers and a
real control-plane process on free ports.

    python bench/propagation.py [--writes 500] [--informers 100] [--backends etcd,zookeeper]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import KEYS, TOKEN, Stack, cpu_seconds, pct, peak_rss_mb, run_loop, running_stack, wait_ready
from controlplane.store.base import Put
from controlplane.store.informer import Informer, Snapshot


@dataclass
class Samples:
    api_write: list[float] = field(default_factory=list)  # PUT sent -> 200 received
    api_total: list[float] = field(default_factory=list)  # PUT sent -> last informer holds the revision
    direct_total: list[float] = field(default_factory=list)  # the same etcd txn sent directly -> last informer holds it
    cp_cpu_s: float = 0.0
    cp_rss_mb: float = 0.0


def model(ctx: int) -> dict[str, object]:
    return {
        "kind": "Model",
        "metadata": {"name": "bench"},
        "spec": {"ollama_tag": "bench:1", "capabilities": ["chat"], "context_window": ctx},
    }


async def measure(stack: Stack, *, writes: int, n_informers: int) -> Samples:
    samples = Samples()
    api, cp_pid = stack.api, stack.control_plane.pid
    store = stack.open_store()
    complete: dict[int, float] = {}  # revision -> when the last informer's handler saw it
    arrivals: dict[int, int] = {}
    waiters: dict[int, asyncio.Event] = {}

    def handler(snapshot: Snapshot) -> None:
        rev = snapshot.revision
        arrivals[rev] = arrivals.get(rev, 0) + 1
        if arrivals[rev] == n_informers:
            complete[rev] = time.perf_counter()
            waiters.setdefault(rev, asyncio.Event()).set()

    informers = [Informer(store, KEYS.config_prefix()) for _ in range(n_informers)]
    for inf in informers:
        inf.add_handler(handler)
    tasks = [asyncio.create_task(inf.run()) for inf in informers]
    try:
        async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            await wait_ready(client)
            await asyncio.gather(*(inf.wait_synced(10) for inf in informers))
            await client.put("/api/v1/config/models/bench", json=model(1024))  # create; the rest update
            await asyncio.sleep(0.2)
            cpu0 = cpu_seconds(cp_pid)
            for i in range(writes * 2):
                through_api = i % 2 == 0
                start = time.perf_counter()
                if through_api:
                    resp = await client.put("/api/v1/config/models/bench", json=model(2048 + i))
                    rev = int(resp.headers["etag"].strip('"'))
                    samples.api_write.append((time.perf_counter() - start) * 1000)
                else:  # the transaction the service makes (object + config head), without the API
                    body = json.dumps(model(2048 + i)).encode()
                    rev = await store.commit([Put(KEYS.config("models", "bench"), body), Put(KEYS.config_head(), b"{}")])
                await asyncio.wait_for(waiters.setdefault(rev, asyncio.Event()).wait(), 5)
                (samples.api_total if through_api else samples.direct_total).append((complete[rev] - start) * 1000)
            samples.cp_cpu_s = cpu_seconds(cp_pid) - cpu0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
    return samples


def report(results: dict[str, Samples], *, writes: int, n_informers: int) -> None:
    """One table, a column pair (p50, p99) per backend, so they read side by side."""
    backends = list(results)
    print(f"propagation: {writes} writes each way (alternating), {n_informers} informers in one process, SQLite audit")
    print(f"{'ms':44s}" + "".join(f"{b + ' p50':>16s}{b + ' p99':>16s}" for b in backends))
    rows = [
        ("API write (PUT -> 200, incl. audit)", "api_write"),
        ("API write -> all informers hold revision", "api_total"),
        ("baseline: same store txn -> all informers", "direct_total"),
    ]
    for label, attr in rows:
        cells = "".join(f"{statistics.median(getattr(r, attr)):16.2f}{pct(getattr(r, attr), 99):16.2f}" for r in results.values())
        print(f"{label:44s}{cells}")
    for backend, r in results.items():
        ratio = statistics.median(r.api_total) / statistics.median(r.direct_total)
        print(
            f"{backend}: API/baseline p50 x{ratio:.2f}; control plane {r.cp_cpu_s / writes * 1000:.2f} ms CPU per API write, "
            f"peak RSS {r.cp_rss_mb:.0f} MB; goal p99 < 20 ms: {'met' if pct(r.api_total, 99) < 20 else 'NOT met'}"
        )
    print(f"bench process ({n_informers} informers + client): peak RSS {peak_rss_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--informers", type=int, default=100)
    parser.add_argument("--backends", default="etcd,zookeeper", help="comma-separated: etcd, zookeeper")
    args = parser.parse_args()
    results: dict[str, Samples] = {}
    for backend in args.backends.split(","):
        with running_stack(backend) as stack:
            results[backend] = run_loop(measure(stack, writes=args.writes, n_informers=args.informers))
            results[backend].cp_rss_mb = peak_rss_mb(stack.control_plane.pid)
    report(results, writes=args.writes, n_informers=args.informers)


if __name__ == "__main__":
    main()
