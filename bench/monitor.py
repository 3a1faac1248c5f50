"""Performance monitor benchmark, one run:

1. The outcome pipeline: records published to a Redis stream, folded into SQLite by the monitor's
   consumer (batches of 500, one transaction each): records per second absorbed.
2. What recording costs inside the router process: ``RedisOutcomeSink.record`` (encode and
   queue, after the answer is sent) per call against the log sink, and the sending task's CPU per
   record.
3. The router's added latency with outcome recording on and off: two router processes, one of
   them writing every outcome to Redis, in alternating rounds at 1 and 50 clients (goal: recording
   costs under 50 µs per request).

    python bench/monitor.py [--records 50000] [--calls 300] [--levels 1:1 50:5]
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

from prometheus_client import CollectorRegistry

from bench.common import pct, run_loop
from controlplane.db.engine import make_engine, migrate
from controlplane.services.monitor import OutcomeConsumer, OutcomeStore
from router.core import LogSink, Outcome
from router.outcomes import RedisOutcomeSink
from tests.fixtures.services import RedisServer


def outcome(i: int, rng: random.Random) -> Outcome:
    return Outcome(f"req-{i}", "chat", rng.choice(["small", "big"]), rng.choice(["n0", "n1", "n2"]), rng.choice([None, "a", "b"]),
                   "ok", 25.0, rng.uniform(10, 300), rng.uniform(20, 2000), 1, time.time(), 42, 55.5)  # fmt: skip


async def pipeline(redis_url: str, count: int) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    sink = RedisOutcomeSink(redis_url, registry=CollectorRegistry(), stream="bench:outcomes", queue=count)
    rng = random.Random(3)
    for i in range(count):
        sink.record(outcome(i, rng))
    started = time.perf_counter()
    while await sink.flush_once():
        pass
    sent_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/meta.db")
        migrate(engine)
        store = OutcomeStore(engine, stream="bench:outcomes")
        consumer = OutcomeConsumer(client, store, batch=500)
        await consumer.ensure_group()
        started, folded = time.perf_counter(), 0
        while folded < count:
            folded += await consumer.run_once(block_ms=100)
        elapsed = time.perf_counter() - started
        engine.dispose()
    print(f"pipeline: {count:,} records sent by the router's sink in {sent_s:.2f} s ({count / sent_s:,.0f}/s); "
          f"folded into SQLite by the monitor in {elapsed:.2f} s = {count / elapsed:,.0f} records/s "
          f"(batches of 500, one transaction each)")  # fmt: skip
    await sink.close()
    await client.delete("bench:outcomes")
    await client.aclose()


def record_cost(redis_url: str, calls: int = 20_000) -> None:
    rng = random.Random(4)
    items = [outcome(i, rng) for i in range(calls)]
    log_sink = LogSink()

    async def measure() -> tuple[list[float], list[float], float]:
        sink = RedisOutcomeSink(redis_url, registry=CollectorRegistry(), stream="bench:cost", queue=calls)
        on, off = [], []
        for item in items:  # alternate, so drift hits both
            t0 = time.perf_counter_ns()
            sink.record(item)
            t1 = time.perf_counter_ns()
            log_sink.record(item)
            t2 = time.perf_counter_ns()
            on.append((t1 - t0) / 1000)
            off.append((t2 - t1) / 1000)
        cpu0 = time.process_time()
        while await sink.flush_once():
            pass
        send_us = (time.process_time() - cpu0) / calls * 1e6
        await sink._redis.delete("bench:cost")
        await sink.close()
        return on, off, send_us

    on, off, send_us = run_loop(measure())
    cost = pct(on, 50) - pct(off, 50) + send_us
    print(f"recording in the router process, {calls:,} calls, µs: record() (encode + queue) p50 {pct(on, 50):.1f} "
          f"p99 {pct(on, 99):.1f}; log sink p50 {pct(off, 50):.1f} p99 {pct(off, 99):.1f}; "
          f"sending (one XADD per batch of 500, off the request path) {send_us:.1f} µs of CPU per record")  # fmt: skip
    print(f"  recording costs {cost:.1f} µs of router CPU per request over the log sink "
          f"(goal under 50 µs: {'met' if cost < 50 else 'NOT met'})")  # fmt: skip


def latency(redis_url: str, calls: int, levels: list[tuple[int, int]]) -> None:
    from bench.router_latency import measure, report
    from bench.router_stack import running

    with running(sim_token_s=0.02, litellm=False, outcomes_redis_url=redis_url) as stack:
        results = run_loop(measure(stack, calls=calls, levels=levels))
        report(results, stack)
    print("\nrecording on (router + outcome records) against off (router, Ollama API), two router processes, same run")
    print("  (two processes differ by a few hundred µs with the same code: this checks for a gross cost, the")
    print("  per-request figure above is the measurement):")
    for (clients, tokens), by_path in results.items():
        off, on = by_path["router, Ollama API"], by_path["router + outcome records"]
        d50, d99 = pct(on.ms, 50) - pct(off.ms, 50), pct(on.ms, 99) - pct(off.ms, 99)
        cpu = (on.cpu_s / len(on.ms) - off.cpu_s / len(off.ms)) * 1e6 if on.ms and off.ms else float("nan")
        print(f"  {clients} client(s), {tokens}-token answers: p50 {d50 * 1000:+.0f} µs, p99 {d99 * 1000:+.0f} µs; "
              f"router CPU {cpu:+.0f} µs per request")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--levels", nargs="+", default=["1:1", "50:5"])
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        asyncio.run(pipeline(server.url, args.records))
        record_cost(server.url)
        levels = [(int(c), int(t)) for c, t in (level.split(":") for level in args.levels)]
        latency(server.url, args.calls, levels)
    finally:
        server.close()


if __name__ == "__main__":
    main()
