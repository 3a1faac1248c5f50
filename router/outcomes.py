"""Outcome records to the performance monitor: a Redis stream (``XADD``, trimmed by age here; the
monitor also trims what it has acknowledged, see ``controlplane/services/monitor.py``).

``record`` encodes the record and appends it to a bounded in-memory queue (a few microseconds,
after the answer is sent); one task sends what is queued every quarter second as one stream
entry holding a JSON array of records (``b``): one ``XADD`` per batch, not per record, because a
pipelined ``XADD`` per record cost ~30 µs of CPU each in redis-py, and a wake-up per request far
more at low rates. Each record carries a
key unique to it (this process's random prefix and a counter): a batch sent again after a
failure that Redis had in fact taken is recognised by the monitor and counted once. When Redis is down the queue holds what it can
and drops the oldest beyond that, counted in ``llmtune_router_outcomes_dropped_total``; sending
resumes when Redis answers again."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from router.core import Outcome
from schemas.monitor import OUTCOME_STREAM

log = logging.getLogger(__name__)


class RedisOutcomeSink:
    def __init__(self, url: str, *, registry: CollectorRegistry, stream: str = OUTCOME_STREAM, queue: int = 100_000,
                 batch: int = 500, max_age_s: float = 900, every_s: float = 0.25) -> None:  # fmt: skip
        import redis.asyncio as redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._queue: deque[bytes] = deque(maxlen=queue)
        self._prefix, self._seq = secrets.token_hex(6), itertools.count()
        self._stream, self._batch, self._max_age_ms, self._every = stream, batch, int(max_age_s * 1000), every_s
        self._wake = asyncio.Event()
        self.sent = Counter("llmtune_router_outcomes_sent", "Outcome records written to the stream.", registry=registry)
        why = "Outcome records dropped: the queue was full while Redis was away."
        self.dropped = Counter("llmtune_router_outcomes_dropped", why, registry=registry)
        self._task: asyncio.Task[None] | None = None

    def record(self, outcome: Outcome) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped.inc()
        self._queue.append(_encode(outcome, f"{self._prefix}-{next(self._seq)}"))
        if len(self._queue) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def run(self) -> None:
        """Forever: send what is queued; on a Redis failure wait, then try again (nothing is lost
        unless the queue overflows meanwhile)."""
        backoff = 0.1
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._every)
            self._wake.clear()
            try:
                while self._queue:
                    await self.flush_once()
                backoff = 0.1
            except Exception as exc:  # redis-py: ConnectionError, TimeoutError, OSError; keep going
                log.warning("outcome stream unreachable (%s); %d record(s) queued", exc, len(self._queue))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def flush_once(self) -> int:
        """Send up to one batch as one entry; the records leave the queue only once Redis took it."""
        batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
        if not batch:
            return 0
        oldest = f"{int(time.time() * 1000) - self._max_age_ms}-0"  # entries older than this go, read or not
        await self._redis.xadd(self._stream, {"b": b"[" + b",".join(batch) + b"]"}, minid=oldest, approximate=False)
        for _ in batch:
            self._queue.popleft()
        self.sent.inc(len(batch))
        return len(batch)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:  # a last send of what is queued, if Redis is there
            while self._queue:
                await asyncio.wait_for(self.flush_once(), 2)
        except Exception as exc:
            log.warning("%d outcome record(s) not sent at shutdown: %s", len(self._queue), exc)
        await self._redis.aclose()


def _encode(o: Outcome, key: str) -> bytes:
    return orjson.dumps({
        "key": key, "at": o.at, "id": o.request_id, "route": o.route, "model": o.model, "node": o.node, "variant": o.variant,
        "status": o.status, "decision_us": round(o.decision_us, 1), "ttft_ms": round(o.first_byte_ms, 3),
        "total_ms": round(o.total_ms, 3), "attempts": o.attempts, "tokens": o.tokens, "tokens_per_s": o.tokens_per_s,
        "signals": list(o.signals), **({"question": o.question, "answer": o.answer} if o.question is not None else {}),
        "api_key": o.api_key, "tenant": o.tenant, "prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens,
        "estimated": o.estimated, "trace_id": o.trace_id,
        **({"cls": o.cls, "chosen": o.chosen, "why": o.why, "scores": o.scores} if o.cls else {}),
    })  # fmt: skip
