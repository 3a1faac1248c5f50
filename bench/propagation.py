"""Propagation benchmark: a write through the REST API until 100 informers in this process hold
the new revision, against a baseline of the same etcd transaction made directly (no API, no
audit), alternating the two so machine drift hits both. Prints p50/p95/p99, the ratio, CPU per
write and peak RSS of each process. Real etcd and a real control-plane process on free ports.

    python bench/propagation.py [--writes 500] [--informers 100]
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

from bench.common import KEYS, TOKEN, cpu_seconds, pct, peak_rss_mb, run_loop, running_stack, wait_ready
from controlplane.store.base import Put
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.informer import Informer, Snapshot


@dataclass
class Samples:
    api_write: list[float] = field(default_factory=list)  # PUT sent -> 200 received
    api_total: list[float] = field(default_factory=list)  # PUT sent -> last informer holds the revision
    direct_total: list[float] = field(default_factory=list)  # the same etcd txn sent directly -> last informer holds it
    cp_cpu_s: float = 0.0


def model(ctx: int) -> dict[str, object]:
    return {
        "kind": "Model",
        "metadata": {"name": "bench"},
        "spec": {"ollama_tag": "bench:1", "capabilities": ["chat"], "context_window": ctx},
    }


async def measure(api: str, etcd_url: str, cp_pid: int, *, writes: int, n_informers: int) -> Samples:
    samples = Samples()
    store = EtcdStore(EtcdConfig(endpoints=(etcd_url,)))
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


def report(s: Samples, *, writes: int, n_informers: int, cp_rss_mb: float) -> None:
    def row(name: str, values: list[float]) -> str:
        return f"{name:46s} {statistics.median(values):8.2f} {pct(values, 95):8.2f} {pct(values, 99):8.2f} {max(values):8.2f}"

    print(f"propagation: {writes} writes each way (alternating), {n_informers} informers in one process, etcd 3.5.1, SQLite")
    print(f"{'ms':46s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}")
    print(row("API write (PUT -> 200, incl. audit)", s.api_write))
    print(row("API write -> all informers hold revision", s.api_total))
    print(row("baseline: same etcd txn -> all informers hold it", s.direct_total))
    print(
        f"ratio API/baseline: p50 x{statistics.median(s.api_total) / statistics.median(s.direct_total):.2f}, "
        f"p99 x{pct(s.api_total, 99) / pct(s.direct_total, 99):.2f}"
    )
    print(f"control plane: {s.cp_cpu_s / writes * 1000:.2f} ms CPU per API write, peak RSS {cp_rss_mb:.0f} MB")
    print(f"bench process ({n_informers} informers + client): peak RSS {peak_rss_mb():.0f} MB")
    print(f"goal p99 < 20 ms for API write -> {n_informers} informers: {'met' if pct(s.api_total, 99) < 20 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--informers", type=int, default=100)
    args = parser.parse_args()
    with running_stack() as (etcd_url, cp, api):
        samples = run_loop(measure(api, etcd_url, cp.pid, writes=args.writes, n_informers=args.informers))
        rss = peak_rss_mb(cp.pid)
    report(samples, writes=args.writes, n_informers=args.informers, cp_rss_mb=rss)


if __name__ == "__main__":
    main()
