"""The performance monitor's outcome pipeline: router outcome records from a Redis stream (consumer
group, acknowledged) folded into SQL figures per time bucket and model / node / route / variant,
plus raw samples kept for a bounded retention.

Exactly once, across crashes: a batch's figures and the stream id of its last record are written
in one SQL transaction, and acknowledged in Redis only after it commits. A record delivered again
(the monitor died between the commit and the acknowledgement) has an id at or below the stored
one and is skipped. Unacknowledged records are read again first after a restart, under the same
consumer name, by whichever control plane leads then."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from controlplane.db.models import MonitorOffset, OutcomeBucket, OutcomeSample
from controlplane.services.judge import DEFAULT_RUBRIC, Judge, queue_for_judging
from controlplane.services.loops import lead
from controlplane.services.quality import QualityBook, QualityLoop
from controlplane.services.usage import fold_usage
from controlplane.settings import MonitorSettings
from controlplane.store.leases import Election, Fence
from rag.router_client import RouterClient
from schemas.monitor import MONITOR_GROUP, OUTCOME_STREAM, OutcomeRecord

log = logging.getLogger(__name__)

#: Upper bounds (ms) of the latency and time-to-first-token histograms kept per bucket; the last is open.
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, float("inf"))
CONSUMER = "monitor"  # one name for every leader, so a new leader reads what the last left unacknowledged

Key = tuple[int, str, str, str, str]  # bucket, route, model, node, variant


def stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Figures:
    """One bucket's figures while a batch is folded in."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    cancelled: int = 0
    total_ms_sum: float = 0.0
    ttft_ms_sum: float = 0.0
    tokens_sum: int = 0
    tps_sum: float = 0.0
    tps_n: int = 0
    latency_hist: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_MS))
    ttft_hist: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_MS))
    signals: dict[str, int] = field(default_factory=dict)

    def add(self, rec: OutcomeRecord) -> None:
        self.requests += 1
        if rec.status == "ok":
            self.ok += 1
        elif rec.status == "error":
            self.errors += 1
        else:
            self.cancelled += 1
        self.total_ms_sum += rec.total_ms
        self.ttft_ms_sum += rec.ttft_ms
        self.tokens_sum += rec.tokens or 0
        if rec.tokens_per_s is not None:
            self.tps_sum += rec.tokens_per_s
            self.tps_n += 1
        self.latency_hist[bisect.bisect_left(LATENCY_BOUNDS_MS, rec.total_ms)] += 1
        self.ttft_hist[bisect.bisect_left(LATENCY_BOUNDS_MS, rec.ttft_ms)] += 1
        for name in rec.signals:
            self.signals[name] = self.signals.get(name, 0) + 1

    def merge_into(self, row: OutcomeBucket) -> None:
        for name in ("requests", "ok", "errors", "cancelled", "total_ms_sum", "ttft_ms_sum", "tokens_sum", "tps_sum", "tps_n"):
            setattr(row, name, getattr(row, name) + getattr(self, name))
        row.latency_hist = [a + b for a, b in zip(row.latency_hist, self.latency_hist, strict=True)]
        row.ttft_hist = [a + b for a, b in zip(row.ttft_hist, self.ttft_hist, strict=True)]
        merged = dict(row.signals)
        for name, count in self.signals.items():
            merged[name] = merged.get(name, 0) + count
        row.signals = merged


def fold(records: Iterable[OutcomeRecord], *, bucket_s: int) -> dict[Key, Figures]:
    out: dict[Key, Figures] = {}
    for rec in records:
        key = (int(rec.at // bucket_s * bucket_s), rec.route or "", rec.model, rec.node, rec.variant or "")
        out.setdefault(key, Figures()).add(rec)
    return out


class OutcomeStore:
    """The SQL side: applies batches exactly once, prunes old samples."""

    def __init__(self, engine: Engine, *, stream: str = OUTCOME_STREAM, bucket_s: int = 60, judge_route: str | None = None,
                 judge_limit: int = 1000, quality: QualityBook | None = None) -> None:  # fmt: skip
        """``judge_route``: with it, answers that carry their texts are queued for the judge (at most
        ``judge_limit``); ``quality``: the quality posterior the answers of quality routes fold into."""
        self._engine, self.stream, self.bucket_s, self._quality = engine, stream, bucket_s, quality
        self._judge_route, self._judge_limit = judge_route, judge_limit
        self.unjudged = 0  # answers left out of the judge's queue for its bound

    def last_id(self) -> tuple[int, int]:
        with Session(self._engine) as session:
            row = session.get(MonitorOffset, self.stream)
            return stream_id(row.last_id) if row else (0, 0)

    def apply(self, entries: Sequence[tuple[str, OutcomeRecord]]) -> int:
        """Fold the entries newer than the stored offset into the figures, in one transaction; how many."""
        if not entries:
            return 0
        with Session(self._engine) as session, session.begin():
            offset = session.get(MonitorOffset, self.stream, with_for_update=True)
            done = stream_id(offset.last_id) if offset else (0, 0)
            newer = [(i, r) for i, r in entries if stream_id(i) > done]
            fresh = self._unseen(session, newer)
            if not newer:
                return 0
            for (bucket, route, model, node, variant), figures in fold((r for _, r in fresh), bucket_s=self.bucket_s).items():
                row = session.scalars(select(OutcomeBucket).where(
                    OutcomeBucket.bucket == bucket, OutcomeBucket.route == route, OutcomeBucket.model == model,
                    OutcomeBucket.node == node, OutcomeBucket.variant == variant)).one_or_none()  # fmt: skip
                if row is None:
                    row = OutcomeBucket(bucket=bucket, route=route, model=model, node=node, variant=variant, **_zero())
                    session.add(row)
                figures.merge_into(row)
            fold_usage(session, (r for _, r in fresh), bucket_s=self.bucket_s)
            if self._quality is not None:
                self._quality.fold_outcomes(session, (r for _, r in fresh))
            session.add_all(_sample(r) for _, r in fresh)
            if self._judge_route is not None:
                self.unjudged += queue_for_judging(session, (r for _, r in fresh), route=self._judge_route,
                                                   limit=self._judge_limit)  # fmt: skip
            last = max((i for i, _ in newer), key=stream_id)
            if offset is None:
                session.add(MonitorOffset(stream=self.stream, last_id=last, applied=len(fresh)))
            else:
                offset.last_id, offset.applied = last, offset.applied + len(fresh)
        return len(fresh)

    @staticmethod
    def _unseen(session: Session, entries: list[tuple[str, OutcomeRecord]]) -> list[tuple[str, OutcomeRecord]]:
        """Entries whose record key was not counted before (a router resends a batch whose answer
        it lost), each key once. Keys are remembered as long as the raw samples are kept."""
        keys = [r.key for _, r in entries]
        seen = set(session.scalars(select(OutcomeSample.key).where(OutcomeSample.key.in_(keys)))) if keys else set()
        out = []
        for entry_id, record in entries:
            if record.key not in seen:
                seen.add(record.key)
                out.append((entry_id, record))
        return out

    def prune(self, *, keep_s: float, now: float | None = None) -> int:
        """Delete raw samples older than ``keep_s``; how many."""
        cutoff = (now or time.time()) - keep_s
        with Session(self._engine) as session, session.begin():
            return int(session.execute(delete(OutcomeSample).where(OutcomeSample.at < cutoff)).rowcount or 0)  # type: ignore[attr-defined]


def _sample(r: OutcomeRecord) -> OutcomeSample:
    return OutcomeSample(
        key=r.key, at=r.at, request_id=r.id, route=r.route or "", model=r.model, node=r.node, variant=r.variant or "",
        status=r.status, total_ms=r.total_ms, ttft_ms=r.ttft_ms, tokens=r.tokens, tokens_per_s=r.tokens_per_s,
        signals=list(r.signals), cls=r.cls,
    )  # fmt: skip


def _zero() -> dict[str, Any]:
    empty = [0] * len(LATENCY_BOUNDS_MS)
    return {"requests": 0, "ok": 0, "errors": 0, "cancelled": 0, "total_ms_sum": 0.0, "ttft_ms_sum": 0.0, "tokens_sum": 0,
            "tps_sum": 0.0, "tps_n": 0, "latency_hist": list(empty), "ttft_hist": list(empty), "signals": {}}  # fmt: skip


class OutcomeConsumer:
    """The Redis side: reads the stream in its consumer group, hands batches to the store, acks."""

    def __init__(self, redis: Any, store: OutcomeStore, *, batch: int = 500) -> None:
        self._redis, self._store, self._batch = redis, store, batch
        self._pending_done = False

    def restart(self) -> None:
        """Read again from what is pending (unacknowledged) before new records."""
        self._pending_done = False

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._store.stream, MONITOR_GROUP, id="0", mkstream=True)
        except Exception as exc:  # redis-py's ResponseError: BUSYGROUP when it exists already
            if "BUSYGROUP" not in str(exc):
                raise

    async def run_once(self, *, block_ms: int = 1000) -> int:
        """One batch: first what an earlier run left unacknowledged, then new records. How many
        records it folded in (records already counted are acknowledged, not counted again)."""
        start = ">" if self._pending_done else "0"
        reply = await self._redis.xreadgroup(MONITOR_GROUP, CONSUMER, {self._store.stream: start}, count=self._batch,
                                             block=None if start == "0" else block_ms)  # fmt: skip
        entries = reply[0][1] if reply else []
        if start == "0" and not entries:
            self._pending_done = True
            return 0
        ids, parsed = [], []
        for raw_id, fields in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            ids.append(entry_id)
            parsed += [(entry_id, record) for record in _parse(entry_id, fields)]
        applied = await asyncio.to_thread(self._store.apply, parsed)
        if ids:
            await self._redis.xack(self._store.stream, MONITOR_GROUP, *ids)
        return applied


class StreamTrimmer:
    """Keeps the outcome stream to what is still needed. Entries that every consumer group has
    acknowledged go (``XTRIM MINID`` at the oldest entry a group still needs: its oldest pending
    one, else its last delivered one). So do entries older than ``max_age_s``, read or not: a
    monitor that is down for long loses its oldest records rather than Redis its memory. Each pass
    also measures the stream (length, bytes) for the metrics."""

    def __init__(self, redis: Any, stream: str, *, max_age_s: float) -> None:
        self._redis, self._stream, self._max_age_s = redis, stream, max_age_s
        self.length: int | None = None  # None until measured (this replica never led)
        self.bytes: int | None = None
        self.trimmed = 0

    async def needed_from(self) -> str | None:
        """The oldest entry id some consumer group still needs; None when there is no group."""
        oldest: tuple[int, int] | None = None
        for group in await self._redis.xinfo_groups(self._stream):
            name, pending = _text(group["name"]), int(group["pending"])
            first = _text(group["last-delivered-id"])
            if pending:
                summary = await self._redis.xpending(self._stream, name)
                first = _text(summary["min"]) if summary.get("min") else first
            if oldest is None or stream_id(first) < oldest:
                oldest = stream_id(first)
        return None if oldest is None else f"{oldest[0]}-{oldest[1]}"

    async def trim(self, *, now: float | None = None) -> int:
        """One pass; how many entries it removed."""
        cutoff = (int(((now or time.time()) - self._max_age_s) * 1000), 0)
        needed = await self.needed_from()
        threshold = cutoff if needed is None else max(cutoff, stream_id(needed))
        removed = int(await self._redis.xtrim(self._stream, minid=f"{threshold[0]}-{threshold[1]}", approximate=False))
        self.trimmed += removed
        self.length = int(await self._redis.xlen(self._stream))
        self.bytes = int(await self._redis.memory_usage(self._stream) or 0)
        return removed


class StreamCollector(Collector):
    """The outcome stream as the leading monitor last measured it."""

    def __init__(self, trimmer: StreamTrimmer) -> None:
        self._trimmer = trimmer

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        t = self._trimmer
        if t.length is None:
            return []
        length = GaugeMetricFamily("llmtune_outcome_stream_length", "Entries in the outcome stream (each a batch of records).")
        length.add_metric([], t.length)
        size = GaugeMetricFamily("llmtune_outcome_stream_bytes", "Memory the outcome stream takes in Redis (MEMORY USAGE).")
        size.add_metric([], t.bytes or 0)
        trimmed = CounterMetricFamily("llmtune_outcome_stream_trimmed", "Entries trimmed (read by every group, or too old).")
        trimmed.add_metric([], t.trimmed)
        return [length, size, trimmed]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(entry_id: str, fields: dict[Any, Any]) -> list[OutcomeRecord]:
    """An entry's records: ``b`` holds a JSON array of them (the router's batches), ``r`` one."""
    batch, one = fields.get(b"b") or fields.get("b"), fields.get(b"r") or fields.get("r")
    try:
        items: list[Any] = orjson.loads(batch) if batch is not None else [orjson.loads(one)] if one is not None else []
    except orjson.JSONDecodeError as exc:
        log.error("dropping outcome entry %s: not JSON (%s)", entry_id, exc)
        return []
    out = []
    for item in items:
        try:
            out.append(OutcomeRecord.model_validate(item))
        except ValidationError as exc:  # a malformed record is dropped (and acknowledged), not retried forever
            log.error("dropping an outcome of entry %s: %s", entry_id, exc.errors()[:2])
    return out


class MonitorTick:
    """One step of the monitor, as its leader: fold a batch of outcomes in (waiting up to a second
    for one), and when due trim the stream, run ``tick`` (the experiment guardrails and bandit) with
    the leader's fencing token, ``quality`` (the quality posterior's publication, fenced by the
    election) and prune old samples. ``clock``: injectable for tests."""

    def __init__(
        self, consumer: OutcomeConsumer, store: OutcomeStore, *, keep_s: float,
        tick: Callable[[Fence | None], Awaitable[object]] | None = None, tick_s: float = 30.0,
        trimmer: StreamTrimmer | None = None, trim_s: float = 5.0, prune_s: float = 60.0,
        quality: Callable[[Election], Awaitable[object]] | None = None, quality_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._consumer, self._store, self._keep_s, self._tick, self._trimmer = consumer, store, keep_s, tick, trimmer
        self._quality = quality
        self._every = {"trim": trim_s, "tick": tick_s, "prune": prune_s, "quality": quality_s}
        self._clock = clock
        self._last: dict[str, float] = {}
        self._grouped = False
        self._term: int | None = None  # the lead this replica acts under (its fence's revision)

    def _due(self, what: str, now: float) -> bool:
        last = self._last.setdefault(what, now)  # the first of each is due one interval after the start
        if now - last > self._every[what]:
            self._last[what] = now
            return True
        return False

    async def __call__(self, election: Election | None) -> None:
        if election is not None and (term := election.fence().revision) != self._term:  # not leading: nothing is read
            self._term, self._grouped = term, False  # a new lead: first what the last leader left unacknowledged
            self._consumer.restart()
        try:
            if not self._grouped:  # once per start, and again after a failure (Redis may have lost the group)
                await self._consumer.ensure_group()
                self._grouped = True
            await self._consumer.run_once()
            now = self._clock()
            if self._trimmer is not None and self._due("trim", now):
                await self._trimmer.trim()
            if self._tick is not None and self._due("tick", now):
                await self._tick(election.fence() if election is not None else None)
            if self._quality is not None and election is not None and self._due("quality", now):
                await self._quality(election)
            if self._due("prune", now):
                await asyncio.to_thread(self._store.prune, keep_s=self._keep_s)
        except Exception:
            self._grouped = False
            raise


async def lead_and_consume(
    consumer: OutcomeConsumer, store: OutcomeStore, *, election: Election | None, keep_s: float, check_s: float = 5.0,
    tick: Callable[[Fence | None], Awaitable[object]] | None = None, tick_s: float = 30.0,
    trimmer: StreamTrimmer | None = None, trim_s: float = 5.0,
    quality: Callable[[Election], Awaitable[object]] | None = None, quality_s: float = 5.0,
) -> None:  # fmt: skip
    """Forever: become the leader (when an election is given: one monitor per fleet), then run
    ``MonitorTick`` while leading, so the guardrails' writes fail once another leads. A Redis or
    database failure is logged and retried after a second; leadership is checked every
    ``check_s``, and a leader that could not renew its lease in time stops acting."""
    step = MonitorTick(consumer, store, keep_s=keep_s, tick=tick, tick_s=tick_s, trimmer=trimmer, trim_s=trim_s,
                       quality=quality, quality_s=quality_s)  # fmt: skip
    if election is not None:
        await lead(election, step, name="outcome monitor", every_s=0, retry_s=1.0, check_s=check_s)
        return
    while True:
        try:
            await step(None)
        except Exception:
            log.exception("outcome monitor failed; retrying in 1 s")
            await asyncio.sleep(1)


async def start_monitor(
    settings: MonitorSettings,
    engine: Engine,
    election: Election,
    *,
    tick: Callable[[Fence | None], Awaitable[object]] | None = None,
    registry: CollectorRegistry | None = None,
    router: RouterClient | None = None,
    quality: QualityLoop | None = None,
) -> None:
    """The control plane's monitor: one leader among its replicas (``election``, key ``monitor``);
    ``router``: the client the judge calls the router with; ``quality``: the loop that publishes the
    quality posteriors (answers of quality routes fold into its book)."""
    import redis.asyncio as redis

    outcomes = OutcomeStore(engine, bucket_s=settings.bucket_s, judge_route=settings.judge_route,
                            quality=quality.book if quality is not None else None)  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=5)
    judge = None
    if settings.judge_route:
        if router is None:
            raise ValueError("the judge needs the client of the router")
        judge = Judge(engine, router, route=settings.judge_route, rubric=settings.judge_rubric or DEFAULT_RUBRIC)
    worker = asyncio.create_task(judge.run(election.fence)) if judge is not None else None  # judges while leading
    try:
        consumer = OutcomeConsumer(client, outcomes, batch=settings.batch)
        trimmer = StreamTrimmer(client, outcomes.stream, max_age_s=settings.stream_max_age_s)
        if registry is not None:
            registry.register(StreamCollector(trimmer))
        await lead_and_consume(consumer, outcomes, election=election, keep_s=settings.keep_samples_s, tick=tick,
                               tick_s=settings.guardrails_every_s, trimmer=trimmer,
                               quality=quality.tick if quality is not None else None,
                               quality_s=settings.quality_every_s)  # fmt: skip
    finally:
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        await client.aclose()


def main() -> None:
    """``python -m controlplane.services.monitor --redis URL --db URL``: the pipeline alone, with
    no election (one such process; the control plane runs it with one)."""
    import argparse

    import redis.asyncio as redis

    from controlplane.db.engine import make_engine, migrate

    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--stream", default=OUTCOME_STREAM)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--bucket-s", type=int, default=60)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = make_engine(args.db)
    migrate(engine)
    store = OutcomeStore(engine, stream=args.stream, bucket_s=args.bucket_s)
    consumer = OutcomeConsumer(redis.Redis.from_url(args.redis), store, batch=args.batch)
    asyncio.run(lead_and_consume(consumer, store, election=None, keep_s=86_400))


if __name__ == "__main__":
    main()
