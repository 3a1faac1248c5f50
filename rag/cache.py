"""Caches for query embeddings and retrieval results: Redis when configured and reachable, else
in this process. Keys carry the collection's configuration revision and content generation, so a
change of either makes old entries unreachable (they expire on their own)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None: ...


class MemoryCache:
    """A bounded LRU with expiry."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                return None
            if found[0] < time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return found[1]

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + ttl_s, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)


class RedisCache:
    """Redis, with the in-process cache standing in while Redis cannot be reached: a query never
    fails because of the cache, and after a failure Redis is left alone for ``retry_s``."""

    def __init__(self, url: str, *, prefix: str = "llmtune:rag:", retry_s: float = 5.0, timeout_s: float = 0.25) -> None:
        import redis.asyncio as redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._prefix, self._retry_s = prefix, retry_s
        self._fallback = MemoryCache()
        self._down_until = 0.0

    async def close(self) -> None:
        await self._redis.aclose()

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        if self._usable():
            log.warning("Redis cache unreachable (%s); caching in process for %.0f s", exc, self._retry_s)
        self._down_until = time.monotonic() + self._retry_s

    async def get(self, key: str) -> bytes | None:
        if self._usable():
            try:
                found: bytes | None = await self._redis.get(self._prefix + key)
                return found
            except Exception as exc:  # redis-py raises ConnectionError, TimeoutError, ResponseError, OSError
                self._failed(exc)
        return await self._fallback.get(key)

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None:
        if self._usable():
            try:
                await self._redis.set(self._prefix + key, value, ex=ttl_s)
                return
            except Exception as exc:
                self._failed(exc)
        await self._fallback.set(key, value, ttl_s=ttl_s)
