"""The quality strategy end to end on a simulated fleet, real etcd, Redis and the real judge path:
two models with opposite strengths (the simulator's judge scores their answers by a profile per
model and task), mixed code and chat traffic through the router, outcome records and judge scores
folded by the monitor's leader, the posterior published through the store. The route learns to
send each class to its better model, beats static 50/50 weights on the judge's mean score, follows
a flipped profile, abandons a model that starts failing, and the guardrail returns it to its
static weights on a breach."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.db.engine import make_engine
from controlplane.db.models import Feedback
from controlplane.store.keys import KeySpace
from schemas.monitor import OUTCOME_STREAM
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer, RedisServer
from tests.helpers import model_doc, route_doc
from tests.sim.engine import Fault

pytestmark = pytest.mark.etcd

PROFILE = {"coder-a": {"code": 0.9, "*": 0.3}, "chatty-b": {"code": 0.3, "*": 0.9}}
FLIPPED = {"coder-a": {"code": 0.3, "*": 0.9}, "chatty-b": {"code": 0.9, "*": 0.3}}
MODEL_OF = {"a": "coder-a", "b": "chatty-b"}
_n = itertools.count()
WAVE = 40  # requests per wave: half code, half chat
#: The margin the learned route must beat static 50/50 weights by, in mean judge score (0 to 1):
#: static weights score (0.9 + 0.3) / 2 = 0.6 on this profile; a perfect router 0.9.
MARGIN = 0.15


def prompt(cls: str) -> str:
    n = next(_n)
    if cls == "code":
        return f"Write a python function that parses record {n} of the orders file."
    return f"Tell me something nice about the weather on day {n}."


async def wave(client: httpx.AsyncClient, size: int = WAVE, *, learning: bool = True) -> list[tuple[str, str, str]]:
    """``size`` requests (code and chat alternating), four at a time: (class, model, request id) each;
    ``learning``: the quality strategy is on (each answer names its class)."""
    out: list[tuple[str, str, str]] = []

    async def one(cls: str) -> None:
        body = {"model": "assist", "messages": [{"role": "user", "content": prompt(cls)}], "stream": False}
        resp = await client.post("/api/chat", json=body)
        assert resp.status_code == 200, resp.text
        out.append((cls, resp.headers["x-route-model"], resp.headers["x-request-id"]))
        assert resp.headers.get("x-route-class") == (f"{cls}/short" if learning else None)

    classes = ["code", "chat"] * (size // 2)
    for start in range(0, size, 4):
        await asyncio.gather(*(one(c) for c in classes[start : start + 4]))
    return out


def shares(answers: list[tuple[str, str, str]]) -> dict[str, float]:
    """The share of each class's requests its better model (under PROFILE) served."""
    counts = Counter((cls, model) for cls, model, _ in answers)
    return {cls: counts[(cls, best)] / max(1, sum(n for (c, _), n in counts.items() if c == cls))
            for cls, best in (("code", "a"), ("chat", "b"))}  # fmt: skip


async def test_the_quality_strategy_learns_follows_abandons_and_is_guarded(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path, redis_server: RedisServer
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).delete(OUTCOME_STREAM)
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    monitor = {"redis_url": redis_server.url, "judge_route": "judge", "quality_every_s": 0.5}
    await fleet.start_control_plane(monitor=monitor)
    db = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        sim = await fleet.add_node("node-0")
        sim.engine.quality = {m: dict(p) for m, p in PROFILE.items()}
        quality = {"explore": 0.05, "half_life_s": 8, "floor": 0.35, "min_samples": 8,
                   "guardrails": {"max_error_rate": 0.3, "min_samples": 20, "window_s": 30}}  # fmt: skip
        assist = route_doc("assist", "a", "b", match={"model_aliases": ["assist"]}, strategy="quality",
                           quality={**quality, "enabled": False},  # static 50/50 weights first, for the baseline
                           circuit_breaker={"consecutive_failures": 1000})  # a failing model is left to the posterior
        objects = [model_doc("a", tag="coder-a:7b", caps=["chat", "code"]), model_doc("b", tag="chatty-b:8b"),
                   model_doc("judge", tag="judge:1b"), route_doc("judge", "judge", match={"model_aliases": ["judge-only"]}),
                   assist]  # fmt: skip
        assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
        await fleet.until_ready(models=3)
        url = await fleet.start_router(outcomes_redis_url=redis_server.url, judge_sample=1.0)

        def scores(ids: list[str]) -> dict[str, float]:
            with Session(db) as session:
                rows = session.execute(select(Feedback.request_id, Feedback.score).where(Feedback.request_id.in_(ids)))
                return {r[0]: float(r[1] or 0.0) for r in rows}

        async def judged(answers: list[tuple[str, str, str]]) -> dict[str, float]:
            ids = [i for _, _, i in answers]

            async def all_in() -> bool:
                return len(await asyncio.to_thread(scores, ids)) == len(ids)

            await fleet.eventually(all_in, timeout_s=60)
            return await asyncio.to_thread(scores, ids)

        async def published() -> float:
            report = (await fleet.api.get("/api/v1/routes/assist/quality")).json()
            return float(report["published_at"] or 0)

        def last_scored(ids: list[str]) -> float:
            with Session(db) as session:
                return float(session.scalar(select(func.max(Feedback.at)).where(Feedback.request_id.in_(ids))) or 0.0)

        async def settle(answers: list[tuple[str, str, str]]) -> None:
            """Every answer judged, then a posterior published after the last score (the leader
            publishes a route only when its evidence moved: this one has the scores folded in)."""
            await judged(answers)
            newest = await asyncio.to_thread(last_scored, [i for _, _, i in answers])

            async def newer() -> bool:
                return await published() > newest

            await fleet.eventually(newer, timeout_s=10)

        async def waves_until(done: Callable[[dict[str, float]], bool], *, most: int) -> int:
            """Waves (each judged, then published) until ``done(shares of the wave)``; the answers it took."""
            seen, got = 0, {}
            while seen < most:
                answers = await wave(client)
                seen += len(answers)
                await settle(answers)
                got = shares(answers)
                if done(got):
                    return seen
            raise AssertionError(f"not there after {seen} answers: {got}")

        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            # 1. static 50/50 weights: the judge's mean score is the baseline
            static = await wave(client, 80, learning=False)
            baseline = sum((await judged(static)).values()) / len(static)
            assert 0.45 < baseline < 0.75, baseline  # (0.9 + 0.3) / 2 = 0.6, +-0.034 for 80 answers
            # 2. the quality strategy on: it learns from judged answers, a wave at a time
            assist["spec"]["quality"] = quality
            assert (await fleet.api.post("/api/v1/config:apply", json={"objects": [assist]})).status_code == 200

            async def strategy_on() -> bool:  # the router's table has the change (its informer follows within moments)
                probe = {"model": "assist", "messages": [{"role": "user", "content": "hi"}], "dry_run": True}
                return "quality" in (await client.post("/api/v1/route", json=probe)).json()["decision"]

            await fleet.eventually(strategy_on, timeout_s=10)
            learned_after = await waves_until(lambda got: min(got.values()) >= 0.8, most=240)
            measured = await wave(client, 80)
            got = shares(measured)
            assert got["code"] >= 0.8 and got["chat"] >= 0.8, got
            mean = sum((await judged(measured)).values()) / len(measured)
            assert mean >= max(baseline, 0.6) + MARGIN, (mean, baseline)
            report = (await fleet.api.get("/api/v1/routes/assist/quality")).json()
            code = next(c for c in report["classes"] if c["name"] == "code/short")
            means = {m["model"]: m["mean"] for m in code["models"]}
            assert means["a"] > means["b"], report
            # 3. the profile flips: the traffic follows within a bounded number of answers
            sim.engine.quality = {m: dict(p) for m, p in FLIPPED.items()}
            followed_after = await waves_until(lambda got: max(got.values()) <= 0.2, most=400)  # b serves code, a chat
            # 4. b starts failing: it is abandoned for code (its answers fall back to a), and the floor says so
            sim.engine.faults.append(Fault("/api/chat", status=500, message="CUDA error", times=-1, model="chatty-b:8b"))

            async def abandoned() -> bool:
                answers = await wave(client, 20)
                code_models = Counter(m for c, m, _ in answers if c == "code")
                await asyncio.sleep(0.6)
                return code_models["a"] == 10 and await excluded_b()

            async def excluded_b() -> bool:
                report = (await fleet.api.get("/api/v1/routes/assist/quality")).json()
                return any(m["model"] == "b" and m["excluded"] for c in report["classes"] for m in c["models"])

            await fleet.eventually(abandoned, timeout_s=90)
            events = (await fleet.api.get("/api/v1/history", params={"kind": "quality"})).json()
            assert any("b is no longer chosen" in str(e) for e in events.get("items", events)), events
            # 5. every model fails: the route's error rate breaches the guardrail, the strategy is turned off
            sim.engine.faults.append(Fault("/api/chat", status=500, message="CUDA error", times=-1, model="coder-a:7b"))
            body = {"model": "assist", "messages": [{"role": "user", "content": "hello"}], "stream": False}

            async def turned_off() -> bool:  # the failures go on until the guardrail's window holds enough of them
                for _ in range(10):
                    await client.post("/api/chat", json=body)
                route = (await fleet.api.get("/api/v1/config/routes/assist")).json()
                return route["spec"]["quality"]["enabled"] is False

            await fleet.eventually(turned_off, timeout_s=60)
            history = (await fleet.api.get("/api/v1/config/routes/assist/history")).json()
            assert "quality guardrail: error rate" in str(history) and "static weights" in str(history)
            sim.engine.faults.clear()

            async def static_again() -> bool:
                resp = await client.post("/api/chat", json=body)
                return resp.status_code == 200 and "x-route-class" not in resp.headers

            await fleet.eventually(static_again, timeout_s=10)
        print(f"\nquality routing: baseline {baseline:.3f}, learned {mean:.3f} after {learned_after} answers; "
              f"followed a flip after {followed_after} answers")
    finally:
        db.dispose()
        await fleet.close()
