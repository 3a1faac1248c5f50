"""The added-latency measurement of bench/router.py: paths, alternating rounds, the report."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bench.common import cpu_seconds, machine_cpu, pct, peak_rss_mb
from bench.router_stack import LITELLM_KEY, Stack
from router.upstream import Origin, UpstreamError, UpstreamPool

MESSAGES = [{"role": "user", "content": "Say hello to the platform team."}]


@dataclass
class PathResult:
    ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: float = 0.0  # CPU of the proxy process under test while its path ran
    wall_s: float = 0.0
    busy: list[int] = field(default_factory=lambda: [0, 0])  # the machine's busy and total CPU ticks while it ran
    # The router's own time per whole answer, from its llmtune_router_overhead_seconds histogram
    # (scraped around each of its rounds): upper bound -> requests, cumulative.
    overhead: dict[float, float] = field(default_factory=dict)


async def _overhead(router: str) -> dict[float, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{router}/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith('llmtune_router_overhead_seconds_bucket{le="'):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.split()[-1])
    return out


def histogram_pct(buckets: dict[float, float], p: float) -> float:
    """The p-th percentile of a cumulative histogram, interpolated within its bucket."""
    bounds = sorted(buckets)
    target = p / 100 * buckets[bounds[-1]]
    low, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= target:
            if bound == float("inf"):
                return low
            return low + (bound - low) * ((target - below) / (count - below) if count > below else 0.0)
        low, below = bound, count
    return low


Path = tuple[str, dict[str, Any], str | None, dict[str, str] | None]


def paths(stack: Stack, tokens: int = 1) -> dict[str, Path]:
    """name -> (URL, body, the pid-map key of the process in between, request headers). The
    simulator answers ``tokens`` tokens, one fixed wait (SIM_TOKEN_S) each."""
    ollama = {"messages": MESSAGES, "stream": False, "options": {"num_predict": tokens}}
    openai = {"model": "bench", "messages": MESSAGES, "max_tokens": tokens}
    out = {
        "direct (Ollama API)": (f"{stack.sim}/api/chat", {"model": "llama3.2:1b", **ollama}, None, None),
        "TCP pipe (hop alone)": (f"{stack.pipe}/api/chat", {"model": "llama3.2:1b", **ollama}, "tcp", None),
        "uvicorn+aiohttp proxy": (f"{stack.floor}/api/chat", {"model": "bench", **ollama}, "http", None),
        "our HTTP plumbing alone": (f"{stack.raw}/api/chat", {"model": "bench", **ollama}, "raw", None),
        "router, Ollama API": (f"{stack.router}/api/chat", {"model": "bench", **ollama}, "router", None),
        "router, OpenAI API": (f"{stack.router}/v1/chat/completions", openai, "router", None),
    }
    if stack.baseline:
        then = f"router @{stack.baseline_ref[:10]}"
        out[f"{then}, Ollama"] = (f"{stack.baseline}/api/chat", {"model": "bench", **ollama}, "baseline", None)
        out[f"{then}, OpenAI"] = (f"{stack.baseline}/v1/chat/completions", openai, "baseline", None)
    if stack.keyed:
        key = {"Authorization": f"Bearer {stack.key}"}
        out["router + key + limits, Ollama"] = (f"{stack.keyed}/api/chat", {"model": "bench", **ollama}, "keyed", key)
        out["router + key + limits, OpenAI"] = (f"{stack.keyed}/v1/chat/completions", openai, "keyed", key)
    if stack.recording:
        out["router + outcome records"] = (f"{stack.recording}/api/chat", {"model": "bench", **ollama}, "recording", None)
    if stack.litellm:
        out["LiteLLM proxy, OpenAI API"] = (
            f"{stack.litellm}/v1/chat/completions",
            openai,
            "litellm",
            {"Authorization": f"Bearer {LITELLM_KEY}"},
        )
    return out


async def _round(pool: UpstreamPool, url: str, body: dict[str, Any], *, workers: int, count: int, result: PathResult,
                 spread_s: float = 0.0, headers: dict[str, str] | None = None) -> None:
    """``count`` requests spread over ``workers`` concurrent clients, each on its own keep-alive
    connection. The client is the router's own (router/upstream.py): httpx spent ~1 ms of CPU per
    request here, which at 50 clients took that much CPU from the processes being measured."""
    per_worker = max(1, count // workers)
    split = urlsplit(url)
    origin, path, data = Origin.parse(f"{split.scheme}://{split.netloc}"), split.path, orjson.dumps(body)

    async def worker(start_s: float) -> None:
        await asyncio.sleep(start_s)
        for _ in range(per_worker):
            started = time.perf_counter()
            try:
                resp = await pool.post(origin, path, data, connect_timeout_s=10, whole=True, headers=headers)
                await resp.read()
                resp.release()
                ok = resp.status == 200
            except UpstreamError:
                ok = False
            if ok:
                result.ms.append((time.perf_counter() - started) * 1000)
            else:
                result.errors += 1

    # Independent clients do not start in the same instant: starts are spread over one answer time.
    # Started together, the clients stay in lock-step (every answer takes the same fixed time), and
    # each proxy then meets all of them as one burst, which measures the burst, not the proxy.
    await asyncio.gather(*(worker(spread_s * i / workers) for i in range(workers)))


async def _settle(pid: int, *, quiet_s: float = 0.005, limit_s: float = 10.0) -> None:
    """Wait until a proxy stops working after its round: LiteLLM goes on for a while (logging and
    accounting after each answer), which would otherwise slow the next path's round and hide from
    its own CPU figure."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.1)
        if cpu_seconds(pid) - before < quiet_s:
            return


async def measure(stack: Stack, *, calls: int, levels: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str, PathResult]]:
    """``levels``: (concurrent clients, answer tokens) pairs, one measurement each."""
    out: dict[tuple[int, int], dict[str, PathResult]] = {}
    for concurrency, tokens in levels:
        table, spread_s = paths(stack, tokens), tokens * stack.token_s
        results = {name: PathResult() for name in table}
        per_round = max(concurrency, calls // 10)
        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them under us (while
        # another path's rounds run); the pool also replaces one found closed.
        pool = UpstreamPool(idle_s=2.0)
        try:
            for url, body, _, headers in table.values():  # warm-up (connections, runners), not counted
                await _round(pool, url, body, workers=concurrency, count=max(per_round, 2 * concurrency), result=PathResult(),
                             spread_s=spread_s, headers=headers)
            for _ in range(10):  # alternate the paths so machine drift hits all of them alike
                for name, (url, body, proc, headers) in table.items():
                    pid = stack.pids.get(proc) if proc else None
                    scraped = {"router": stack.router, "recording": stack.recording, "baseline": stack.baseline,
                               "keyed": stack.keyed}.get(proc or "")  # fmt: skip
                    before = await _overhead(scraped) if scraped else {}
                    cpu0, t0, machine0 = (cpu_seconds(pid) if pid else 0.0), time.perf_counter(), machine_cpu()
                    await _round(pool, url, body, workers=concurrency, count=per_round, result=results[name],
                                 spread_s=spread_s, headers=headers)
                    results[name].wall_s += time.perf_counter() - t0
                    results[name].busy = [a + b - c for a, b, c in zip(results[name].busy, machine_cpu(), machine0, strict=True)]
                    if pid:
                        await _settle(pid)
                        results[name].cpu_s += cpu_seconds(pid) - cpu0
                    if before:
                        after, seen = await _overhead(scraped), results[name].overhead  # type: ignore[arg-type]
                        for bound, count in after.items():
                            seen[bound] = seen.get(bound, 0.0) + count - before.get(bound, 0.0)
        finally:
            pool.close()
        out[(concurrency, tokens)] = results
    return out


def _busy(result: PathResult) -> float:
    return 100 * result.busy[0] / result.busy[1] if result.busy[1] else 0.0


def report(results: dict[tuple[int, int], dict[str, PathResult]], stack: Stack) -> None:
    token_ms = stack.token_s * 1000
    print(f"\nadded latency: non-streaming chat, one simulated Ollama node answering after a fixed {token_ms:.0f} ms per token, "
          "paths alternated, client starts spread over one answer time")  # fmt: skip
    for (concurrency, tokens), by_path in results.items():
        direct = by_path["direct (Ollama API)"]
        answer_ms = tokens * token_ms
        print(f"concurrency {concurrency}, {tokens}-token answers ({answer_ms:.0f} ms): {len(direct.ms)} requests per path")
        head = f"{'p50':>8s}{'p99':>8s}{'+p50':>8s}{'+p99':>8s}{'req/s':>8s}{'CPU ms/req':>12s}{'machine':>14s}{'errors':>8s}"
        print(f"  {'ms':28s}{head}")
        added: dict[str, tuple[float, float]] = {}
        for name, r in by_path.items():
            if not r.ms:
                print(f"  {name:28s} no successful request ({r.errors} errors)")
                continue
            a50, a99 = pct(r.ms, 50) - pct(direct.ms, 50), pct(r.ms, 99) - pct(direct.ms, 99)
            added[name] = (a50, a99)
            cpu = f"{r.cpu_s / len(r.ms) * 1000:.2f}" if r.cpu_s else "-"
            busy = f"{_busy(r):.0f}% busy"
            print(f"  {name:28s}{pct(r.ms, 50):8.2f}{pct(r.ms, 99):8.2f}{a50:8.2f}{a99:8.2f}{len(r.ms) / r.wall_s:8.0f}{cpu:>12s}"
                  f"{busy:>14s}{r.errors:8d}")  # fmt: skip
        ours = added.get("router, Ollama API")
        if ours is not None:
            goal = "met" if ours[0] < 1 and ours[1] < 5 else "NOT met"
            line = f"  router added p50 {ours[0]:.2f} ms, p99 {ours[1]:.2f} ms; goal p50 < 1 ms and p99 < 5 ms: {goal}"
            if _busy(by_path["router, Ollama API"]) > 85:
                line += " (the 2 cores were saturated: the figure includes waiting for a CPU)"
            floor = added.get("our HTTP plumbing alone")
            if floor is not None:
                line += f"; over its plumbing alone: p50 {ours[0] - floor[0]:+.2f} ms"
            peer = added.get("LiteLLM proxy, OpenAI API")  # its master key on: compare with our keyed router
            mine = added.get("router + key + limits, OpenAI") or added.get("router, OpenAI API")
            if peer is not None and mine is not None and peer[0] > 0:
                ratio = max(0.0, mine[0]) / peer[0]  # an added latency within noise of zero counts as zero
                goal = "met" if ratio <= 0.3 else "NOT met"
                line += f"; ours (key + limits) / LiteLLM (master key), OpenAI API, added p50 x{ratio:.2f} (goal <= 0.3: {goal})"
            print(line)
        for door in ("Ollama", "OpenAI") if stack.keyed else ():
            off, on = added.get(f"router, {door} API"), added.get(f"router + key + limits, {door}")
            if off is not None and on is not None:
                cost = on[0] - off[0]
                goal = f"; goal at 1 client < +0.2 ms: {'met' if cost < 0.2 else 'NOT met'}" if concurrency == 1 else ""
                print(f"  {door} API, API key + limits in Redis against off: added p50 {on[0]:.2f} vs {off[0]:.2f} ms "
                      f"({cost:+.2f}{goal})")  # fmt: skip
        for door in ("Ollama", "OpenAI") if stack.baseline else ():
            now, then = added.get(f"router, {door} API"), added.get(f"router @{stack.baseline_ref[:10]}, {door}")
            if now is not None and then is not None:
                print(f"  {door} API, this tree against {stack.baseline_ref}: added p50 {now[0]:.2f} vs {then[0]:.2f} ms "
                      f"({now[0] - then[0]:+.2f}), p99 {now[1]:.2f} vs {then[1]:.2f} ms ({now[1] - then[1]:+.2f})")  # fmt: skip
        for name, r in by_path.items():
            if r.overhead and max(r.overhead.values()) > 0:
                p50, p99 = histogram_pct(r.overhead, 50) * 1000, histogram_pct(r.overhead, 99) * 1000
                goal = "met" if p50 < 1 and p99 < 5 else "NOT met"
                print(f"  {name}: the router's own time per answer (its overhead histogram): p50 {p50:.2f} ms, "
                      f"p99 {p99:.2f} ms (goal p50 < 1 ms and p99 < 5 ms: {goal})")  # fmt: skip
    rss = ", ".join(f"{name} {peak_rss_mb(pid):.0f} MB" for name, pid in stack.pids.items())
    print(f"peak RSS: {rss}")
