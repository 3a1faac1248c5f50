"""The router's Redis client for its request path (rate limits): one connection, commands pipelined
on it in order, replies parsed by hiredis (Redis's own C parser).

Why not redis-py's asyncio client, which the router uses off its request path (outcome records):
one ``EVALSHA`` there cost ~100 µs of CPU on this machine against ~50 µs here, and a limits
check runs on every request of a limited key before its first upstream byte. What it supports is
what the router sends: ``redis://`` and ``rediss://`` URLs with a user and password and a
database, commands and pipelines, a timeout per call; a lost connection fails the calls in flight
(RespError) and the next call connects again.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


class RespError(Exception):
    """Redis cannot be reached, did not answer in time, or answered with an error."""


def _encode(args: Sequence[Any]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if self.waiting:
                waiter = self.waiting.popleft()
                if not waiter.done():
                    waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RespError(f"connection lost: {exc or 'closed by the server'}")
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)


class Resp:
    """``await client.call("GET", "k")``; ``await client.pipeline([("INCRBY", k, 3), ...])``."""

    def __init__(self, url: str, *, timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {parts.scheme}://…")
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 6379
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._db = int(parts.path.strip("/") or 0)
        self._tls = ssl.create_default_context() if parts.scheme == "rediss" else None
        self._timeout = timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    def __repr__(self) -> str:  # never the password
        return f"Resp({'rediss' if self._tls else 'redis'}://{self._host}:{self._port}/{self._db})"

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._timeout):
                    _, proto = await loop.create_connection(_Protocol, self._host, self._port, ssl=self._tls)
                    hello: list[tuple[Any, ...]] = []
                    if self._password is not None:
                        hello.append(("AUTH", self._user, self._password) if self._user else ("AUTH", self._password))
                    if self._db:
                        hello.append(("SELECT", self._db))
                    for reply in await self._send(proto, hello):
                        if isinstance(reply, hiredis.ReplyError):
                            proto.transport.close()  # type: ignore[union-attr]
                            raise RespError(f"Redis refused the connection: {reply}")
            except (OSError, TimeoutError) as exc:
                raise RespError(f"cannot reach Redis at {self._host}:{self._port}: {exc or 'timed out'}") from None
            self._proto = proto
            return proto

    @staticmethod
    async def _send(proto: _Protocol, commands: Sequence[Sequence[Any]]) -> list[Any]:
        if not commands:
            return []
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in commands]
        proto.waiting.extend(waiters)
        assert proto.transport is not None
        proto.transport.write(b"".join(_encode(c) for c in commands))
        return [await w for w in waiters]

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Replies in order (an error reply is returned as a ``hiredis.ReplyError``, not raised)."""
        proto = await self._connection()
        try:
            async with asyncio.timeout(self._timeout):
                return await self._send(proto, commands)
        except TimeoutError:
            proto.lost = RespError("Redis did not answer in time")  # replies still due would pair with later calls
            if proto.transport is not None:
                proto.transport.close()
            raise RespError(f"Redis did not answer within {self._timeout:g} s") from None

    async def call(self, *args: Any) -> Any:
        (reply,) = await self.pipeline([args])
        if isinstance(reply, hiredis.ReplyError):
            raise RespError(str(reply))
        return reply

    async def script(self, sha: str, body: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a Lua script by its SHA-1, sending its body once if Redis does not know it (a restart)."""
        (reply,) = await self.pipeline([("EVALSHA", sha, len(keys), *keys, *args)])
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            (reply,) = await self.pipeline([("EVAL", body, len(keys), *keys, *args)])
        if isinstance(reply, hiredis.ReplyError):
            raise RespError(f"script failed: {reply}")
        return reply

    async def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
