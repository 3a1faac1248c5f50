"""Control-plane replicas: API write and read latency with two replicas against one, on the same
etcd and PostgreSQL database, in one run. Eight clients write (PUT of a model, If-Match: the
revision they read) and read (GET of a model) in a loop; with one replica all talk to it, with two
each replica takes half the clients (as a Service spreading connections would). The two set-ups
alternate in rounds so that drift hits both alike. On this 2-core machine the replicas, etcd and
PostgreSQL share the cores, so the figures show the cost of a second replica, not a capacity gain.
Every change set moves one key (the configuration head), so concurrent writers conflict and are
retried (8 times); a write that still loses answers 409, counted here as "busy".

    python bench/replicas.py [--rounds 3] [--seconds 5] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import TOKEN, pct, rss_mb, run_loop, start_control_plane, wait_ready
from deploy.local import processes
from tests.fixtures.services import EtcdServer, PostgresServer

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def model(name: str, ctx: int) -> dict[str, object]:
    return {"kind": "Model", "metadata": {"name": name},
            "spec": {"ollama_tag": f"{name}:latest", "capabilities": ["chat"], "context_window": ctx}}  # fmt: skip


async def client(api: str, name: str, until: float, writes: list[float], reads: list[float], busy: list[int]) -> None:
    async with httpx.AsyncClient(base_url=api, headers=AUTH, timeout=30) as c:
        resp = await c.put(f"/api/v1/config/models/{name}", json=model(name, 4096))
        resp.raise_for_status()
        etag, i = resp.headers["etag"], 0
        while time.monotonic() < until:
            i += 1
            t0 = time.perf_counter()
            resp = await c.put(f"/api/v1/config/models/{name}", json=model(name, 4096 + i % 1000), headers={"If-Match": etag})
            if resp.status_code == 409 and "in a row" in resp.text:  # the configuration head moved 8 times under it
                busy.append(1)
                continue
            if resp.status_code != 200:
                raise SystemExit(f"{api}: PUT {name}: {resp.status_code} {resp.text}")
            writes.append((time.perf_counter() - t0) * 1000)
            etag = resp.headers["etag"]
            t0 = time.perf_counter()
            (await c.get(f"/api/v1/config/models/{name}")).raise_for_status()
            reads.append((time.perf_counter() - t0) * 1000)


async def measure(apis: list[str], clients: int, seconds: float, tag: str) -> tuple[list[float], list[float], list[int]]:
    writes: list[float] = []
    reads: list[float] = []
    busy: list[int] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(apis[i % len(apis)], f"{tag}-{i}", until, writes, reads, busy) for i in range(clients)))
    return writes, reads, busy


async def run(args: argparse.Namespace, apis: list[str]) -> None:
    for api in apis:
        async with httpx.AsyncClient(base_url=api) as c:
            await wait_ready(c, timeout_s=60)
    setups = {"one replica": apis[:1], "two replicas": apis}
    figures: dict[str, tuple[list[float], list[float], list[int]]] = {name: ([], [], []) for name in setups}
    await measure(apis, args.clients, 1.0, "warm")
    for r in range(args.rounds):
        for name, chosen in setups.items():
            writes, reads, busy = await measure(chosen, args.clients, args.seconds, f"r{r}-{name[:3]}")
            figures[name][0].extend(writes)
            figures[name][1].extend(reads)
            figures[name][2].extend(busy)
    total = args.rounds * args.seconds
    print(f"{args.clients} clients, {args.rounds} rounds of {args.seconds:g} s each, ms:")
    print(f"  {'':14s}{'write p50':>10s}{'p99':>8s}{'read p50':>10s}{'p99':>8s}{'writes/s':>10s}{'busy 409':>10s}")
    for name, (writes, reads, busy) in figures.items():
        print(f"  {name:14s}{pct(writes, 50):10.2f}{pct(writes, 99):8.2f}{pct(reads, 50):10.2f}{pct(reads, 99):8.2f}"
              f"{len(writes) / total:10.0f}{len(busy):10d}")  # fmt: skip
    one, two = figures["one replica"], figures["two replicas"]
    write_ratio, read_ratio = pct(two[0], 50) / pct(one[0], 50), pct(two[1], 50) / pct(one[1], 50)
    rate = len(two[0]) / len(one[0])
    print(f"  two / one replica: write p50 x{write_ratio:.2f}, read p50 x{read_ratio:.2f}, writes/s x{rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    etcd, pg = EtcdServer(), PostgresServer()
    etcd.start()
    pg.start()
    procs = []
    try:
        db = pg.new_database()
        env = {"LLMTUNE_STORE__ENDPOINTS": etcd.url, "LLMTUNE_DB__URL": db, "LLMTUNE_AUTOSCALER__ENABLED": "false"}
        first, api1 = start_control_plane(env)
        procs.append(first)
        async def ready() -> None:
            async with httpx.AsyncClient(base_url=api1) as c:
                await wait_ready(c, timeout_s=60)  # the first migrates the database; then the second starts
        run_loop(ready())
        second, api2 = start_control_plane(env)
        procs.append(second)
        run_loop(run(args, [api1, api2]))
        print(f"  RSS: {rss_mb(first.pid):.0f} MB and {rss_mb(second.pid):.0f} MB")
    finally:
        processes.stop(procs)
        pg.close()
        etcd.close()


if __name__ == "__main__":
    main()
