"""Live figures over a million raw samples, one run:

1. ``summary`` (SQL aggregates and streamed percentile passes) against the way it used to read the
   window (every sample as an ORM object) on the same database: seconds and this process's RSS
   growth for each.
2. A control plane on that database: ``/healthz`` latency with no live stream open (the baseline),
   then with 24 live metrics streams open (every 1 s, 16 on one window, 8 on one model), and the
   control plane's RSS; goals: ``/healthz`` p99 under 50 ms with the streams open, RSS bounded.

    python bench/metrics_stream.py [--samples 1000000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bench.common import TOKEN, pct, rss_mb, run_loop, start_control_plane, wait_ready
from controlplane.db.engine import make_engine, migrate
from controlplane.db.models import OutcomeSample
from controlplane.services.figures import summary
from deploy.local import processes
from tests.fixtures.services import EtcdServer

WINDOW_S = 900


def fill(db: str, n: int) -> None:
    engine = make_engine(db)
    migrate(engine)
    rng, now = random.Random(3), time.time()
    with Session(engine) as session, session.begin():
        for start in range(0, n, 50_000):
            session.execute(insert(OutcomeSample), [{
                "key": f"k{i}", "at": now - rng.uniform(0, WINDOW_S - 60), "request_id": f"r{i}", "route": "chat",
                "model": rng.choice(["small", "big", "coder"]), "node": rng.choice(["n0", "n1"]), "variant": "",
                "status": "ok" if rng.random() < 0.95 else "error", "total_ms": rng.uniform(5, 3000),
                "ttft_ms": rng.uniform(1, 400), "tokens": 42, "tokens_per_s": rng.uniform(10, 90),
                "signals": ["truncated"] if rng.random() < 0.01 else [],
            } for i in range(start, min(n, start + 50_000))])  # fmt: skip
    engine.dispose()


def in_process(db: str) -> None:
    engine = make_engine(db)
    since = time.time() - WINDOW_S
    before = rss_mb("self")  # type: ignore[arg-type]
    started = time.perf_counter()
    result = summary(engine, window_s=WINDOW_S)
    took, grew = time.perf_counter() - started, rss_mb("self") - before  # type: ignore[arg-type]
    print(f"  summary (SQL)         {took:6.2f} s   RSS +{grew:6.1f} MB   "
          f"({result['fleet']['requests']} samples, p99 {result['fleet']['latency_ms']['p99']} ms)")  # fmt: skip
    before = rss_mb("self")  # type: ignore[arg-type]
    started = time.perf_counter()
    with Session(engine) as session:
        rows = list(session.scalars(select(OutcomeSample).where(OutcomeSample.at >= since)))
    took_orm, grew_orm = time.perf_counter() - started, rss_mb("self") - before  # type: ignore[arg-type]
    print(f"  baseline: ORM rows    {took_orm:6.2f} s   RSS +{grew_orm:6.1f} MB   ({len(rows)} objects, before any figure)")
    print(f"  ratio                 {took_orm / took:6.1f}x faster, {grew_orm / max(grew, 0.1):.0f}x less memory")
    del rows


async def healthz(client: httpx.AsyncClient, seconds: float) -> list[float]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        assert (await client.get("/healthz")).status_code == 200
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.02)
    return out


async def hold(url: str, params: dict[str, str], events: list[int], stop: asyncio.Event) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=auth) as client, client.stream(
        "GET", "/api/v1/metrics/stream", params=params
    ) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for line in resp.aiter_lines():
            if line.startswith("event: summary"):
                events.append(1)
            if stop.is_set():
                return


async def against(url: str, pid: int, seconds: float) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await wait_ready(client)
        quiet = await healthz(client, seconds / 3)
        events: list[int] = []
        stop = asyncio.Event()
        streams = [asyncio.create_task(hold(url, {"window": "15m", "every_s": "1"}, events, stop)) for _ in range(16)]
        streams += [asyncio.create_task(hold(url, {"window": "15m", "every_s": "1", "model": "big"}, events, stop))
                    for _ in range(8)]  # fmt: skip
        await asyncio.sleep(2)
        busy = await healthz(client, seconds)
        rss = rss_mb(pid)
        stop.set()
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    print(f"  /healthz, no stream     p50 {pct(quiet, 50):6.2f} ms  p99 {pct(quiet, 99):6.2f} ms")
    print(f"  /healthz, 24 streams    p50 {pct(busy, 50):6.2f} ms  p99 {pct(busy, 99):6.2f} ms  "
          f"(x{pct(busy, 99) / pct(quiet, 99):.1f} p99; goal p99 < 50 ms)")  # fmt: skip
    print(f"  summary events received {len(events)} in {seconds + 2:.0f} s; control plane RSS {rss:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    db = f"sqlite:///{folder / 'meta.db'}"
    started = time.perf_counter()
    fill(db, args.samples)
    print(f"metrics stream over {args.samples} samples in a {WINDOW_S // 60}-minute window "
          f"(written in {time.perf_counter() - started:.0f} s)")  # fmt: skip
    in_process(db)
    etcd = EtcdServer(progress_interval="5s")
    etcd.start()
    cp = None
    try:
        cp, url = start_control_plane({"LLMTUNE_STORE__ENDPOINTS": etcd.url, "LLMTUNE_DB__URL": db})
        run_loop(against(url, cp.pid, args.seconds))
    finally:
        processes.stop([cp])
        etcd.close()


if __name__ == "__main__":
    main()
