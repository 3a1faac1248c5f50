"""The request path after the decision: try candidates in order until one answers, then stream.

An error, a 5xx/404 or a timeout *before the first byte* moves on to the next candidate (another
node of the same model, then the next model of the chain), within the route's attempt limit and
time budget; after the first byte the answer is committed to that node. Every attempt is
accounted in the live figures (in-flight, latency, circuit breaker) and the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from router.live import LiveStats
from router.policy import Candidate, Decision
from schemas.route import Retries, Timeouts


class UpstreamFailed(Exception):
    """Every candidate tried failed before answering; ``timeout`` says whether the last one timed out."""

    def __init__(self, message: str, *, timeout: bool, attempts: list[str]) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.attempts = attempts


@dataclass
class Opened:
    """An upstream that answered: its first bytes are read, the rest streams from ``response``."""

    candidate: Candidate
    response: httpx.Response
    first: bytes
    rest: AsyncIterator[bytes]  # the same raw stream, after ``first``
    started: float
    first_byte_s: float
    failed: list[str] = field(default_factory=list)  # "node/model: why" of candidates tried before


class Forwarder:
    """One pooled HTTP client per upstream base URL; the attempts loop; the accounting."""

    def __init__(self, live: LiveStats) -> None:
        self.live = live
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, base: str) -> httpx.AsyncClient:
        client = self._clients.get(base)
        if client is None:
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            client = self._clients[base] = httpx.AsyncClient(base_url=base, limits=limits, timeout=None)
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def open(
        self,
        decision: Decision,
        *,
        path: Callable[[Candidate], str],
        body: Callable[[Candidate], Mapping[str, Any]],
        timeouts: Timeouts,
        retries: Retries,
        stream: bool,
    ) -> Opened:
        """The first candidate that answers; UpstreamFailed when none did within the limits."""
        deadline = time.monotonic() + timeouts.total_ms / 1000
        failed: list[str] = []
        last_timeout = False
        for attempt, cand in enumerate(decision.candidates()):
            if attempt > retries.max_attempts or time.monotonic() >= deadline:
                break
            node = cand.node.name if cand.node else "endpoint"
            self.live.started(cand.model.name, node)
            started = time.perf_counter()
            try:
                opened = await self._try(cand, path(cand), body(cand), timeouts, deadline, stream=stream)
            except _AttemptFailed as exc:
                self.live.finished(cand.model.name, node, ok=False)
                failed.append(f"{node}/{cand.model.name}: {exc}")
                last_timeout = exc.timeout
                if not _retry_allowed(exc, retries):
                    break
                continue
            opened.started, opened.failed = started, failed
            return opened
        raise UpstreamFailed("; ".join(failed) or "no candidate was tried", timeout=last_timeout, attempts=failed)

    async def _try(
        self, cand: Candidate, path: str, body: Mapping[str, Any], timeouts: Timeouts, deadline: float, *, stream: bool
    ) -> Opened:
        base = cand.node.url if cand.node else (cand.model.endpoint or "")
        first_s = (timeouts.first_token_ms if stream else timeouts.total_ms) / 1000
        timeout = httpx.Timeout(connect=timeouts.connect_ms / 1000, read=first_s, write=10.0, pool=timeouts.connect_ms / 1000)
        client = self._client(base)
        started = time.perf_counter()
        request = client.build_request("POST", path, content=orjson.dumps(body), timeout=timeout,
                                       headers={"content-type": "application/json"})  # fmt: skip
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise _AttemptFailed(f"timed out connecting ({type(exc).__name__})", timeout=True) from exc
        except httpx.TransportError as exc:
            raise _AttemptFailed(f"cannot connect: {exc or type(exc).__name__}", timeout=False) from exc
        try:
            if response.status_code >= 500 or response.status_code == 404:
                text = (await response.aread())[:300].decode(errors="replace")
                raise _AttemptFailed(f"HTTP {response.status_code} {text}", timeout=False, overloaded=response.status_code == 503)
            remaining = max(0.001, min(first_s, deadline - time.monotonic()))
            chunks = response.aiter_raw()
            first = await _first_chunk(chunks, remaining)
        except _AttemptFailed:
            await response.aclose()
            raise
        except (httpx.TimeoutException, TimeoutError) as exc:
            await response.aclose()
            raise _AttemptFailed("no first byte in time", timeout=True) from exc
        except httpx.TransportError as exc:
            await response.aclose()
            raise _AttemptFailed(f"broke before the first byte: {exc or type(exc).__name__}", timeout=False) from exc
        return Opened(cand, response, first, chunks, started, time.perf_counter() - started)

    def finish(self, opened: Opened, *, ok: bool) -> float:
        """Account for an answer that ended; returns its duration in ms."""
        ms = (time.perf_counter() - opened.started) * 1000
        node = opened.candidate.node.name if opened.candidate.node else "endpoint"
        self.live.finished(opened.candidate.model.name, node, ok=ok, latency_ms=ms if ok else None)
        return ms


class _AttemptFailed(Exception):
    def __init__(self, message: str, *, timeout: bool, overloaded: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.overloaded = overloaded


def _retry_allowed(exc: _AttemptFailed, retries: Retries) -> bool:
    kind = "timeout" if exc.timeout else "overloaded" if exc.overloaded else "error"
    return kind in retries.retry_on


async def _first_chunk(chunks: AsyncIterator[bytes], timeout_s: float) -> bytes:
    async with asyncio.timeout(timeout_s):
        async for chunk in chunks:
            if chunk:
                return chunk
    return b""
