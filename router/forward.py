"""The request path after the decision: try candidates in order until one answers, then stream.

An error, a 5xx/404 or a timeout *before the first byte* moves on to the next candidate (another
node of the same model, then the next model of the chain), within the route's attempt limit and
time budget; after the first byte the answer is committed to that node. Every attempt is
accounted in the live figures (in-flight, latency, circuit breaker) and the metrics.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from router.errors import UpstreamFailed
from router.live import LiveStats
from router.policy import Candidate, Decision
from router.upstream import MAX_WHOLE_BYTES, AnswerTooLarge, Origin, Response, UpstreamError, UpstreamPool
from schemas.route import CircuitBreaker, Retries, Timeouts


@dataclass(frozen=True, slots=True)
class Opened:
    """An upstream that answered: its first bytes are read, the rest streams from ``rest``."""

    candidate: Candidate
    response: Response
    first: bytes
    started: float  # perf_counter when this candidate was tried
    first_byte_s: float
    failed: tuple[str, ...] = ()  # "node/model: why" of candidates tried before
    first_sent: float = 0.0  # perf_counter when the first candidate was tried
    breaker: CircuitBreaker | None = None  # the route's breaker settings

    @property
    def status(self) -> int:
        return self.response.status

    async def rest(self, idle_s: float | None = None) -> AsyncIterator[bytes]:
        """The body after ``first``, as it arrives; UpstreamError when nothing arrives for
        ``idle_s`` (an upstream that stalls mid-answer must not hold the client and the slot)."""
        while True:
            try:
                async with asyncio.timeout(idle_s):  # around the read alone: never while the client consumes
                    chunk = await self.response.chunk()
            except TimeoutError:
                raise UpstreamError(f"nothing arrived for {idle_s:g} s (the route's timeouts.idle_ms)") from None
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        """Give the connection back to the pool if the body was read to the end, else drop it."""
        self.response.release()


class Forwarder:
    """The upstream connection pool, the attempts loop, and the accounting."""

    def __init__(self, live: LiveStats, *, max_answer_bytes: int = MAX_WHOLE_BYTES) -> None:
        self.live = live
        self.pool = UpstreamPool(max_whole_bytes=max_answer_bytes)

    async def close(self) -> None:
        self.pool.close()

    async def open(
        self,
        decision: Decision,
        *,
        upstream: Callable[[Candidate], tuple[str, Mapping[str, Any]]],
        timeouts: Timeouts,
        retries: Retries,
        stream: bool,
        on_answer: Callable[[Candidate, int], Callable[[Response], None] | None] | None = None,
        breaker: CircuitBreaker | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Opened:
        """The first candidate that answers; UpstreamFailed when none did within the limits.
        ``upstream(candidate)``: the path and body it is sent; ``on_answer(candidate, attempt)``
        may give a hook called with a whole answer as it arrives (see ``Response.on_complete``);
        ``headers``: sent with every attempt (the trace context)."""
        deadline, first_sent = time.monotonic() + timeouts.total_ms / 1000, time.perf_counter()
        failed: list[str] = []
        last_timeout = False
        for attempt, cand in enumerate(decision.candidates()):
            if attempt >= max(1, retries.max_attempts) or time.monotonic() >= deadline:
                break
            if attempt:  # a retry: back off (with jitter), within the route's budget
                pause = backoff_s(retries, attempt)
                if time.monotonic() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
            node = cand.node_name
            self.live.started(cand.model.name, node)
            try:
                hook = on_answer(cand, attempt) if on_answer is not None else None
                path, body = upstream(cand)
                response, first, started = await self._try(cand, path, body, timeouts, deadline, stream=stream, on_complete=hook,
                                                           headers=headers)  # fmt: skip
            except _AttemptFailed as exc:
                self.live.finished(cand.model.name, node, ok=False, policy=breaker)
                failed.append(f"{node}/{cand.model.name}: {exc}")
                last_timeout = exc.timeout
                if not _retry_allowed(exc, retries):
                    break
                continue
            except BaseException:  # the client left before an answer: its slot is freed, the node not blamed
                self.live.released(cand.model.name, node)
                raise
            return Opened(cand, response, first, started, time.perf_counter() - started, tuple(failed), first_sent, breaker)
        raise UpstreamFailed("; ".join(failed) or "no candidate was tried", timeout=last_timeout, attempts=max(1, len(failed)))

    async def _try(
        self,
        cand: Candidate,
        path: str,
        body: Mapping[str, Any],
        timeouts: Timeouts,
        deadline: float,
        *,
        stream: bool,
        on_complete: Callable[[Response], None] | None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Response, bytes, float]:
        """The response and its first bytes, and when it was tried."""
        origin = _origin(cand.node.url if cand.node else cand.model.endpoint or "")
        first_s = (timeouts.first_token_ms if stream else timeouts.total_ms) / 1000
        remaining = max(0.001, min(first_s, deadline - time.monotonic()))
        started = time.perf_counter()
        response: Response | None = None
        try:
            async with asyncio.timeout(remaining):  # up to the first byte: after it the answer is committed
                response = await self.pool.post(
                    origin,
                    path,
                    orjson.dumps(body),
                    connect_timeout_s=timeouts.connect_ms / 1000,
                    whole=not stream,
                    on_complete=on_complete,
                    headers=headers,
                )
                if retryable(response.status):
                    text = (await response.read())[:300].decode(errors="replace")
                    raise _AttemptFailed(
                        f"HTTP {response.status} {text}", timeout=False, overloaded=response.status in (429, 503)
                    )
                first = await response.chunk()
        except BaseException as exc:  # the connection goes back only if its answer was read whole
            if response is not None:
                response.release()
            if isinstance(exc, TimeoutError):
                raise _AttemptFailed("no first byte in time", timeout=True) from exc
            if isinstance(exc, AnswerTooLarge):  # another node would answer as much: a 502, the node not blamed
                raise UpstreamFailed(f"{cand.node_name}/{cand.model.name}: {exc}", timeout=False) from exc
            if isinstance(exc, UpstreamError):
                raise _AttemptFailed(f"cannot reach it: {exc}", timeout=False) from exc
            raise
        return response, first, started

    def finish(self, opened: Opened, *, ok: bool, client_gone: bool = False) -> float:
        """Account for an answer that ended; returns its duration in ms (to its last byte, or to
        now when it broke off or the client left)."""
        ms = ((opened.response.completed or time.perf_counter()) - opened.started) * 1000
        node = opened.candidate.node_name
        if client_gone:
            self.live.released(opened.candidate.model.name, node)
        else:
            self.live.finished(opened.candidate.model.name, node, ok=ok, latency_ms=ms if ok else None, policy=opened.breaker)
        return ms


_origin = functools.lru_cache(maxsize=4096)(Origin.parse)  # node and endpoint URLs: a bounded set


def retryable(status: int) -> bool:
    """An answer that sends the request on to the next candidate instead of to the client."""
    return status >= 500 or status in (404, 429)


class _AttemptFailed(Exception):
    def __init__(self, message: str, *, timeout: bool, overloaded: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.overloaded = overloaded


_RETRYING = Retrying()  # only the owner of the call state tenacity's wait strategies read


def backoff_s(retries: Retries, retry: int) -> float:
    """The wait before retry number ``retry`` (1, 2, ...): tenacity's exponential backoff from
    ``backoff_ms`` with as much again of random jitter."""
    if retries.backoff_ms <= 0:
        return 0.0
    base = retries.backoff_ms / 1000
    state = RetryCallState(_RETRYING, None, (), {})
    state.attempt_number = retry
    return float(wait_exponential_jitter(multiplier=base, max=60 * base, jitter=base)(state))


def _retry_allowed(exc: _AttemptFailed, retries: Retries) -> bool:
    kind = "timeout" if exc.timeout else "overloaded" if exc.overloaded else "error"
    return kind in retries.retry_on
