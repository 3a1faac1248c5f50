"""Router benchmark, one run, three figures.

1. Decision time: the policy alone over a route table of 200 models, 500 nodes and 50 routes, for
   a mix of requests (aliases, tenants, tasks, sticky users, long prompts) with live figures for
   every node; p50/p99 against the 100 µs goal, and the table's build time.
2. Added latency: the same non-streaming chat requests sent straight to a simulated Ollama node
   (a fixed time per answer token) and through the router (its Ollama and OpenAI front doors),
   alternating, at 1 and at 50 concurrent clients (each with its own connection, in this process).
   Levels are CLIENTS:TOKENS pairs. The goal is judged on 1:1 (20 ms answers) and on 50:5 (100 ms
   answers, ~250 requests/s); 50:1 offers up to ~2,000 requests/s, which saturates the 2 cores the
   load generator, the simulator and the proxy share (a saturation figure: each line shows how busy
   the machine was).
3. The same stream through LiteLLM's proxy (its own virtualenv, pinned) in the same run: the
   ratio of added latencies, ours / LiteLLM.

4. With ``--baseline REF``: the router of another commit (a git worktree) on the same node, in the
   same alternation: this tree's added latency against that commit's, per front door.

    python bench/router.py [--requests 20000] [--calls 300] [--no-litellm] [--levels 1:1 50:5 50:1] [--latency-only]
                           [--baseline REF]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import pct, peak_rss_mb, run_loop
from router.classify import classify, estimate_tokens
from router.policy import Request, decide
from router.table import RouteTable, build_table
from schemas.common import ConfigObject
from schemas.registry import parse_object
from schemas.status import NodeRegistration, NodeStatus

STRATEGIES = ["weighted", "context_aware", "best_quality", "lowest_cost", "lowest_latency", "least_loaded"]
PROMPTS = [
    "Hi, how are you?",
    "```python\ndef f(x):\n    return x*2\n```\nrefactor this",
    "Summarize the following report in key points: " + "lorem ipsum " * 200,
    "Solve 3x + 4 = 19 and explain",
    "Extract the names and dates as JSON: " + "Alice met Bob on 2024-01-02. " * 20,
]


def fleet(rng: random.Random) -> tuple[list[ConfigObject], dict[str, NodeRegistration], dict[str, NodeStatus]]:
    objects: list[ConfigObject] = []
    for i in range(200):
        caps = ["chat", "code"] if i % 5 == 0 else ["chat"]
        objects.append(parse_object({"kind": "Model", "metadata": {"name": f"m{i}"}, "spec": {
            "ollama_tag": f"m{i}:7b", "capabilities": caps, "context_window": rng.choice([4096, 8192, 32768, 131072]),
            "cost": round(rng.uniform(0.1, 8), 2), "quality_tier": rng.randint(1, 5)}}))  # fmt: skip
    for r in range(50):
        targets = [{"model": f"m{rng.randrange(200)}", "weight": rng.randint(1, 100)} for _ in range(4)]
        targets = list({t["model"]: t for t in targets}.values())
        match = {"model_aliases": [f"alias{r}"]} if r % 2 else {"tenants": [f"tenant{r}"]}
        objects.append(parse_object({"kind": "Route", "metadata": {"name": f"r{r}"}, "spec": {
            "priority": r % 7, "match": match, "targets": targets, "strategy": STRATEGIES[r % len(STRATEGIES)],
            "fallbacks": [f"m{rng.randrange(200)}"], "sticky_key": "header:x-user" if r % 3 == 0 else None}}))  # fmt: skip
    regs, statuses = {}, {}
    for n in range(500):
        held = rng.sample(range(200), 8)
        regs[f"n{n}"] = NodeRegistration(name=f"n{n}", ollama_url=f"http://10.0.{n // 250}.{n % 250}:11434")  # type: ignore[arg-type]
        available, loaded = [f"m{i}:7b" for i in held], [{"name": f"m{i}:7b"} for i in held[:3]]
        statuses[f"n{n}"] = NodeStatus.model_validate(
            {"node": f"n{n}", "ollama_reachable": True, "available_models": available, "loaded_models": loaded}
        )
    return objects, regs, statuses


class Live:
    def __init__(self, rng: random.Random) -> None:
        self._load = {f"n{n}": rng.randint(0, 6) for n in range(500)}
        self._lat = rng.uniform(50, 900)

    def in_flight(self, node: str) -> int:
        return self._load[node]

    def latency_ms(self, model: str, node: str) -> float | None:
        return self._lat

    def model_latency_ms(self, model: str) -> float | None:
        return self._lat

    def model_load(self, model: str) -> float:
        return 0.5

    def available(self, model: str, node: str) -> bool:
        return True


def requests(rng: random.Random, count: int) -> list[Request]:
    out = []
    for _ in range(count):
        prompt = rng.choice(PROMPTS)
        r = rng.randrange(50)
        out.append(Request(
            model=f"alias{r}" if r % 2 else None, tenant=None if r % 2 else f"tenant{r}", task=classify(prompt),
            headers={"x-user": f"user{rng.randrange(1000)}"}, prompt_tokens=estimate_tokens(prompt), max_output_tokens=256,
            draw=rng.random()))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=300, help="requests per path and level")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--levels", nargs="+", default=["1:1", "50:5", "50:1"],
                        help="CLIENTS:TOKENS, one measurement each: concurrent clients and answer tokens (20 ms each)")
    parser.add_argument("--latency-only", action="store_true", help="skip the decision-time part")
    parser.add_argument("--baseline", metavar="REF", help="also run the router of this commit, alternated: before/after figures")
    args = parser.parse_args()
    if not args.latency_only:
        decision(args)
    latency(args)


def decision(args: argparse.Namespace) -> None:
    rng = random.Random(7)
    objects, regs, statuses = fleet(rng)
    started = time.perf_counter()
    table: RouteTable = build_table(objects, regs, statuses, revision=1)
    build_ms = (time.perf_counter() - started) * 1000
    live, reqs = Live(rng), requests(rng, args.requests)
    for req in reqs[:1000]:  # warm-up
        decide(table, req, live)
    times, failures = [], 0
    for req in reqs:
        t0 = time.perf_counter_ns()
        try:
            decide(table, req, live)
        except Exception:
            failures += 1
        times.append((time.perf_counter_ns() - t0) / 1000)
    classify_times = []
    for prompt in PROMPTS * 200:
        t0 = time.perf_counter_ns()
        classify(prompt)
        classify_times.append((time.perf_counter_ns() - t0) / 1000)
    goal = "met" if pct(times, 99) < 100 else "NOT met"
    print(f"router decision: {args.requests} requests over 200 models, 500 nodes, 50 routes (6 strategies), live load per node")
    print(f"{'µs':40s}{'p50':>9s}{'p99':>9s}{'max':>9s}")
    print(f"{'decide() (match, split, filter, score)':40s}{pct(times, 50):9.1f}{pct(times, 99):9.1f}{max(times):9.1f}")
    print(f"{'classify() (task from the prompt)':40s}{pct(classify_times, 50):9.1f}{pct(classify_times, 99):9.1f}"
          f"{max(classify_times):9.1f}")  # fmt: skip
    print(f"no route for {failures} request(s); table build {build_ms:.1f} ms (once per revision); "
          f"goal p99 < 100 µs: {goal}; peak RSS {peak_rss_mb():.0f} MB")  # fmt: skip


def latency(args: argparse.Namespace) -> None:
    from bench.router_latency import measure, report
    from bench.router_stack import running

    with running(sim_token_s=0.02, litellm=not args.no_litellm, baseline_ref=args.baseline) as stack:
        levels = [(int(c), int(t)) for c, t in (level.split(":") if ":" in level else (level, 1) for level in args.levels)]
        results = run_loop(measure(stack, calls=args.calls, levels=levels))
        report(results, stack)


if __name__ == "__main__":
    main()
