"""The outcome pipeline with real Redis and SQLite: 10,000 records, the monitor process killed
(SIGKILL) part-way and started again, and records a router sent twice; the figures are exact."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.db.engine import make_engine, migrate
from controlplane.db.models import MonitorOffset, OutcomeBucket, OutcomeSample
from controlplane.store.keys import KeySpace
from deploy.local import processes
from router.core import Outcome
from schemas.monitor import MONITOR_GROUP, OUTCOME_STREAM
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer, RedisServer
from tests.helpers import model_doc, route_doc

ROOT = Path(__file__).resolve().parents[2]


def records(count: int, rng: random.Random) -> list[dict[str, object]]:
    start = 1_790_000_040.0  # a whole minute
    out = []
    for i in range(count):
        status = rng.choices(["ok", "error", "cancelled"], weights=[90, 8, 2])[0]
        ok = status == "ok"
        out.append({
            "key": f"r1-{i}", "at": start + i * 0.03, "id": f"req-{i}", "route": rng.choice(["chat", None]),
            "model": rng.choice(["small", "big", "coder"]), "node": rng.choice(["n0", "n1"]), "variant": rng.choice([None, "a"]),
            "status": status, "decision_us": 20.0, "ttft_ms": rng.uniform(5, 400), "total_ms": rng.uniform(20, 3000),
            "attempts": 1, "tokens": rng.randint(1, 300) if ok else None, "tokens_per_s": rng.uniform(20, 90) if ok else None,
            "signals": rng.choice([[], [], [], ["truncated"], ["empty"], ["refusal", "invalid_json"]]) if ok else [],
        })  # fmt: skip
    return out


def publish(client: redis.Redis, stream: str, items: list[dict[str, object]]) -> None:
    pipe = client.pipeline(transaction=False)
    for item in items:
        pipe.xadd(stream, {"r": orjson.dumps(item)})
    pipe.execute()


def start_monitor(redis_url: str, db_url: str, stream: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "controlplane.services.monitor", "--redis", redis_url, "--db", db_url, "--stream", stream,
           "--batch", "200"]  # fmt: skip
    return processes.spawn(cmd, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ))


def applied(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            row = session.scalars(select(MonitorOffset)).first()
            return row.applied if row else 0
    finally:
        engine.dispose()


def wait_for(probe, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not reached")


def test_monitor_killed_midway_counts_every_record_once(redis_server: RedisServer, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'meta.db'}"
    migrate(make_engine(db_url))
    stream, client = f"outcomes-{uuid.uuid4().hex[:8]}", redis.Redis.from_url(redis_server.url)
    items = records(10_000, random.Random(5))
    publish(client, stream, items)

    first = start_monitor(redis_server.url, db_url, stream, tmp_path / "monitor.log")
    wait_for(lambda: applied(db_url) >= 3_000)
    first.send_signal(signal.SIGKILL)  # no clean-up of any kind
    first.wait(10)
    part = applied(db_url)
    assert 3_000 <= part < 10_000, f"killed after {part} records"
    publish(client, stream, items[:150])  # a router resending a batch Redis had taken: same keys
    second = start_monitor(redis_server.url, db_url, stream, tmp_path / "monitor.log")
    try:
        wait_for(lambda: applied(db_url) == 10_000)
        time.sleep(0.5)  # nothing more may arrive
        assert applied(db_url) == 10_000
    finally:
        processes.stop([second])

    engine = make_engine(db_url)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(OutcomeSample)) == 10_000
        assert session.scalar(select(func.count(func.distinct(OutcomeSample.key)))) == 10_000
        rows = session.scalars(select(OutcomeBucket)).all()
    assert sum(r.requests for r in rows) == 10_000
    want = Counter((i["model"], i["node"], i["status"]) for i in items)
    got: Counter[tuple[str, str, str]] = Counter()
    for r in rows:
        got[(r.model, r.node, "ok")] += r.ok
        got[(r.model, r.node, "error")] += r.errors
        got[(r.model, r.node, "cancelled")] += r.cancelled
    assert +got == want
    assert sum(r.total_ms_sum for r in rows) == pytest.approx(sum(float(i["total_ms"]) for i in items))  # type: ignore[arg-type]
    assert sum(r.tokens_sum for r in rows) == sum(int(i["tokens"] or 0) for i in items)  # type: ignore[call-overload]
    assert all(sum(r.latency_hist) == r.requests == sum(r.ttft_hist) for r in rows)
    signals: Counter[str] = Counter()
    for r in rows:
        signals.update(r.signals)
    assert signals == Counter(name for i in items for name in i["signals"])  # type: ignore[attr-defined]
    assert {r.bucket % 60 for r in rows} == {0} and len({r.bucket for r in rows}) == 5  # 300 s of records, 60 s buckets
    info = client.xinfo_groups(stream)[0]
    assert info["pending"] == 0  # everything acknowledged


@pytest.mark.etcd
async def test_router_outcomes_reach_the_monitor_through_redis_even_after_redis_was_down(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path, redis_server: RedisServer
) -> None:
    """The router writes a record per request to the stream (queued while Redis is down, sent
    when it is back); the control plane's monitor (leader of its election) folds them into SQL."""
    import httpx

    stream_client = redis.Redis.from_url(redis_server.url)
    stream_client.delete(OUTCOME_STREAM)
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    await fleet.start_control_plane(monitor={"redis_url": redis_server.url, "bucket_s": 60})
    try:
        await fleet.add_node("node-0")
        resp = await fleet.api.post("/api/v1/config:apply", json={"objects": [model_doc("small", tag="llama3.2:1b", ctx=8192)]})
        assert resp.status_code == 200, resp.text

        async def ready() -> bool:
            return bool((await fleet.api.get("/api/v1/models/status")).json()["models"][0]["ready_nodes"] == 1)

        await fleet.eventually(ready, timeout_s=15)
        exported = (await fleet.api.get("/metrics")).text  # what the alert rules watch
        assert 'llmtune_node_health{health="ready",node="node-0"} 1.0' in exported
        assert 'llmtune_node_config_behind{node="node-0"} 0.0' in exported
        url = await fleet.start_router(outcomes_redis_url=redis_server.url)
        body = {"model": "small", "messages": [{"role": "user", "content": "hi"}], "stream": False}

        def counted() -> int:
            engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
            with Session(engine) as session:
                total = session.scalar(select(func.sum(OutcomeBucket.requests))) or 0
            engine.dispose()
            return int(total)

        async def reached(n: int) -> None:
            async def probe() -> bool:
                return await asyncio.to_thread(counted) == n

            await fleet.eventually(probe, timeout_s=20)

        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for extra in ({}, {}, {}, {"options": {"num_predict": 1}}, {"format": "json"}):
                assert (await client.post("/api/chat", json=body | extra)).status_code == 200
            await reached(5)
            redis_server.stop()  # this test Redis keeps nothing on disk: what it held is gone, but it was counted
            for _ in range(3):  # answered as usual; their records wait in the router's queue
                assert (await client.post("/api/chat", json=body)).status_code == 200
            await asyncio.sleep(0.3)
            redis_server.start()
        await reached(8)
        engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
        with Session(engine) as session:
            samples = session.scalars(select(OutcomeSample)).all()
        assert {(s.model, s.node, s.status) for s in samples} == {("small", "node-0", "ok")}
        assert all(s.tokens and s.tokens_per_s and s.total_ms >= s.ttft_ms > 0 for s in samples)
        # the simulator stops at num_predict (done_reason "length"); asked for JSON, it answers JSON
        assert sorted(tuple(s.signals) for s in samples) == [()] * 7 + [("truncated",)]
        assert len({s.request_id for s in samples}) == 8
    finally:
        if redis_server._proc is None:
            redis_server.start()
        await fleet.close()


@pytest.mark.etcd
def test_feedback_is_tied_to_the_answer_and_bad_input_is_refused(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from controlplane.api.app import create_app
    from controlplane.services.monitor import OutcomeStore
    from controlplane.settings import Settings
    from schemas.monitor import OutcomeRecord

    db_url = f"sqlite:///{tmp_path / 'meta.db'}"
    settings = Settings(store={"endpoints": [etcd_server.url], "namespace": keys.namespace}, db={"url": db_url},
                        auth={"bootstrap_token": "admin-secret"}, rag={"data_dir": tmp_path / "rag"})  # fmt: skip
    admin = {"Authorization": "Bearer admin-secret"}
    with TestClient(create_app(settings)) as client:
        record = OutcomeRecord(key="k1", at=time.time(), id="req-42", route="chat", model="small", node="n0", variant="b",
                               status="ok", decision_us=20, ttft_ms=30, total_ms=90, attempts=1)  # fmt: skip
        OutcomeStore(make_engine(db_url)).apply([("1-0", record)])
        viewer = client.post("/api/v1/tokens", json={"name": "app", "role": "viewer"}, headers=admin).json()["token"]
        judged = {"request_id": "req-42", "thumbs": "up", "labels": ["helpful"], "comment": "ok"}
        sent = client.post("/api/v1/feedback", json=judged, headers={"Authorization": f"Bearer {viewer}"})
        assert sent.status_code == 201, sent.text
        body = sent.json()
        assert (body["model"], body["node"], body["route"], body["variant"], body["thumbs"]) == ("small", "n0", "chat", "b", "up")
        assert body["submitter"] == "app"
        assert client.post("/api/v1/feedback", json={"request_id": "req-42", "score": 0.9}, headers=admin).status_code == 201
        # one per (answer, submitter): a resubmission replaces the earlier one, it does not weigh twice
        again = client.post("/api/v1/feedback", json={"request_id": "req-42", "score": 0.25}, headers=admin)
        assert again.status_code == 201 and again.json()["submitter"] == "bootstrap-admin"

        unknown = client.post("/api/v1/feedback", json={"request_id": "nope", "score": 1}, headers=admin)
        assert unknown.status_code == 404 and "no answer with request id 'nope'" in unknown.json()["detail"]
        for bad, why in [({"request_id": "req-42", "score": 1.5}, "score"), ({"request_id": "req-42"}, "give a score"),
                         ({"request_id": "req-42", "thumbs": "sideways"}, "thumbs"),
                         ({"request_id": "req-42", "score": 1, "labels": ["has space"]}, "labels")]:  # fmt: skip
            refused = client.post("/api/v1/feedback", json=bad, headers=admin)
            assert refused.status_code == 422 and why in refused.text, refused.text
        assert client.post("/api/v1/feedback", json={"request_id": "req-42", "score": 1}).status_code == 401

        now = time.time()  # 100 more answers of "big": 1..100 ms, every tenth an error, two truncated
        more = [OutcomeRecord(key=f"m{i}", at=now - 60, id=f"big-{i}", model="big", node="n1", ttft_ms=i / 2, total_ms=float(i),
                              status="error" if i % 10 == 0 else "ok", decision_us=20, attempts=1, tokens_per_s=50.0,
                              signals=["truncated"] if i in (3, 4) else [])
                for i in range(1, 101)]
        OutcomeStore(make_engine(db_url)).apply([(f"2-{i}", r) for i, r in enumerate(more)])
        figures = client.get("/api/v1/metrics/summary", params={"window": "15m"}, headers=admin).json()
        big = figures["models"]["big"]
        assert (big["requests"], big["errors"], big["error_rate"]) == (100, 10, 0.1)
        assert big["latency_ms"] == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
        assert big["signals"] == {"truncated": 2} and big["tokens_per_s"] == 50.0
        assert figures["models"]["small"]["feedback"] == {"count": 2, "mean_score": 0.625}  # thumbs up = 1, then 0.25
        assert figures["fleet"]["requests"] == 101
        only = client.get("/api/v1/metrics/summary", params={"window": "1h", "model": "small"}, headers=admin).json()
        assert list(only["models"]) == ["small"]
        for window in ("15", "-5m", "tenm", "2w"):
            wrong = client.get("/api/v1/metrics/summary", params={"window": window}, headers=admin)
            assert wrong.status_code == 400 and "unit" in wrong.json()["detail"]
        too_long = client.get("/api/v1/metrics/summary", params={"window": "2d"}, headers=admin)
        assert too_long.status_code == 400 and "longer than the raw samples are kept (24 h)" in too_long.json()["detail"]



@pytest.mark.etcd
async def test_an_llm_judge_scores_sampled_answers_through_the_router(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path, redis_server: RedisServer
) -> None:
    import httpx

    from controlplane.db.models import Feedback

    redis.Redis.from_url(redis_server.url).delete(OUTCOME_STREAM)
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    monitor = {"redis_url": redis_server.url, "judge_route": "judge"}
    await fleet.start_control_plane(monitor=monitor)
    try:
        await fleet.add_node("node-0")
        objects = [model_doc("small", tag="llama3.2:1b"), route_doc("judge", "small", match={"model_aliases": ["judge-only"]})]
        assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200

        async def ready() -> bool:
            return bool((await fleet.api.get("/api/v1/models/status")).json()["models"][0]["ready_nodes"] == 1)

        await fleet.eventually(ready, timeout_s=15)
        url = await fleet.start_router(outcomes_redis_url=redis_server.url, judge_sample=1.0)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for question in ("What is etcd?", "How do routers pick nodes?", "Why cache embeddings?"):
                body = {"model": "small", "messages": [{"role": "user", "content": question}], "stream": False}
                assert (await client.post("/api/chat", json=body)).status_code == 200

        def judged() -> list[Feedback]:
            engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
            with Session(engine) as session:
                rows = list(session.scalars(select(Feedback)))
            engine.dispose()
            return rows

        async def three() -> bool:
            return len(await asyncio.to_thread(judged)) == 3

        await fleet.eventually(three, timeout_s=20)
        rows = judged()
        assert all(r.labels == ["judge"] and r.comment.startswith("judge:") and 0 <= (r.score or -1) <= 1 for r in rows)
        assert {r.model for r in rows} == {"small"} and len({r.request_id for r in rows}) == 3
        await asyncio.sleep(1.0)  # the judge's own answers (on its route) are never judged in turn
        assert len(judged()) == 3
    finally:
        await fleet.close()


async def test_the_stream_keeps_only_what_a_group_still_needs_and_nothing_too_old(redis_server: RedisServer) -> None:
    """Entries every consumer group has acknowledged are trimmed (a soak grew Redis by 58 MB with
    everything read), entries past the age bound go even unread, and the stream is measured."""
    import redis.asyncio as aioredis
    from prometheus_client import CollectorRegistry, generate_latest

    from controlplane.services.monitor import StreamCollector, StreamTrimmer
    from router.outcomes import RedisOutcomeSink

    client = aioredis.Redis.from_url(redis_server.url)
    stream = f"trim-{uuid.uuid4().hex[:8]}"
    try:
        now_ms = int(time.time() * 1000)
        for i in range(100):
            await client.xadd(stream, {"r": b"{}"}, id=f"{now_ms - 100 + i}-0")
        await client.xgroup_create(stream, MONITOR_GROUP, id="0")
        await client.xgroup_create(stream, "audit", id="0")
        read = await client.xreadgroup(MONITOR_GROUP, "m", {stream: ">"}, count=1000)
        await client.xack(stream, MONITOR_GROUP, *[entry for entry, _ in read[0][1]])
        audit = (await client.xreadgroup("audit", "a", {stream: ">"}, count=50))[0][1]
        await client.xack(stream, "audit", *[entry for entry, _ in audit[:40]])  # 10 delivered, not acknowledged
        trimmer = StreamTrimmer(client, stream, max_age_s=900)
        assert await trimmer.trim() == 40 and await client.xlen(stream) == 60  # the audit group still needs the 41st on
        await client.xgroup_destroy(stream, "audit")
        assert await trimmer.trim() == 59 and trimmer.length == 1  # all read: the last delivered entry is kept
        registry = CollectorRegistry()
        registry.register(StreamCollector(trimmer))
        text = generate_latest(registry).decode()
        assert "llmtune_outcome_stream_length 1.0" in text and "llmtune_outcome_stream_trimmed_total 99.0" in text
        assert trimmer.bytes and f"llmtune_outcome_stream_bytes {float(trimmer.bytes)}" in text

        old = f"old-{stream}"  # a monitor that has been away: nothing read, but older than the bound
        await client.xgroup_create(old, MONITOR_GROUP, id="0", mkstream=True)
        for i in range(10):
            await client.xadd(old, {"r": b"{}"}, id=f"{now_ms - 2_000_000 + i}-0")
        await client.xadd(old, {"r": b"{}"}, id=f"{now_ms}-0")
        assert await StreamTrimmer(client, old, max_age_s=900).trim() == 10 and await client.xlen(old) == 1

        sink = RedisOutcomeSink(redis_server.url, registry=CollectorRegistry(), stream=f"sink-{stream}", max_age_s=60)
        await client.xadd(f"sink-{stream}", {"r": b"{}"}, id=f"{now_ms - 120_000}-0")  # two minutes old
        sink.record(Outcome("r1", None, "m", "n", None, "ok", 1.0, 1.0, 2.0, 1, at=time.time()))
        assert await sink.flush_once() == 1
        assert await client.xlen(f"sink-{stream}") == 1  # the router's own write trimmed the old entry
        await sink.close()
    finally:
        await client.delete(stream, f"old-{stream}", f"sink-{stream}")
        await client.aclose()


@pytest.mark.etcd
async def test_a_judge_that_loses_the_lead_leaves_its_queue_to_the_next_one_each_answer_judged_once(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path
) -> None:
    """Answers queued with the fold of their outcomes; the leader's judge scores two and loses the
    lead while scoring the third (its score is not stored); the next leader's judge takes the rest.
    Every answer is judged once, none is dropped, and the queue ends empty."""

    from controlplane.db.models import Feedback, JudgeQueued
    from controlplane.services.judge import Judge, JudgeUnavailable
    from controlplane.services.monitor import OutcomeStore
    from controlplane.store.errors import LeadershipLost
    from rag.router_client import RouterClient
    from schemas.monitor import OutcomeRecord
    from tests.fixtures.services import free_port

    fleet = Fleet(etcd_server.url, keys, tmp_path)
    await fleet.start_control_plane()
    engine = make_engine(f"sqlite:///{tmp_path / 'judge.db'}")
    migrate(engine)
    try:
        await fleet.add_node("node-0")
        objects = [model_doc("small", tag="llama3.2:1b"), route_doc("judge", "small", match={"model_aliases": ["judge-only"]})]
        assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
        await fleet.until_ready(models=1)
        url = await fleet.start_router()
        now = time.time()
        records = [OutcomeRecord(key=f"k{i}", at=now + i, id=f"req-{i}", route="chat", model="small", node="node-0",
                                 status="ok", decision_us=20, ttft_ms=5, total_ms=50, attempts=1,
                                 question=f"question {i}?", answer=f"answer {i}.") for i in range(6)]  # fmt: skip
        records.append(records[0].model_copy(update={"key": "k-judge", "id": "req-j", "route": "judge"}))  # never judged
        store = OutcomeStore(engine, judge_route="judge", judge_limit=5)
        assert store.apply([(f"{i + 1}-0", r) for i, r in enumerate(records)]) == 7
        assert store.unjudged == 1  # six to judge, room for five

        calls = 0

        def first_leads() -> None:
            nonlocal calls
            calls += 1
            if calls > 5:  # two answers judged (two checks each); lost while judging the third
                raise LeadershipLost("first no longer leads")

        away = RouterClient(f"http://127.0.0.1:{free_port()}", attempts=1)  # a router that is away: nothing is lost
        with pytest.raises(JudgeUnavailable):
            await Judge(engine, away, route="judge").run_once()
        await away.aclose()
        router = RouterClient(url, timeout_s=30)
        first, second = Judge(engine, router, route="judge"), Judge(engine, router, route="judge")
        with pytest.raises(LeadershipLost):
            await first.run_once(first_leads)
        assert first.judged == 2
        assert await second.run_once() == 3 and second.judged == 3
        assert await second.run_once() == 0
        with Session(engine) as session:
            ids = [f.request_id for f in session.scalars(select(Feedback))]
            left = session.scalar(select(func.count()).select_from(JudgeQueued))
        assert sorted(ids) == [f"req-{i}" for i in range(5)] and left == 0
        await router.aclose()
    finally:
        engine.dispose()
        await fleet.close()
