"""The router's HTTP/1.1 client to its upstreams: keep-alive connections per origin, each an asyncio
protocol parsed by httptools (the parser uvicorn uses), bodies relayed as they arrive.

Why not aiohttp or httpx: on this data path the client's own bookkeeping was most of what the
router added to a request (aiohttp ~0.5 ms, httpx's pool ~1.5 ms of CPU per proxied call on this
machine); a POST with a JSON body to a known origin and a streamed answer back needs little of it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

log = logging.getLogger(__name__)
_HIGH_WATER = 1 << 20  # buffered body bytes at which a streamed answer's socket stops being read
#: The default bound of a whole (non-streamed) answer, well above the largest embedding batch the
#: router's 32 MiB request limit lets through (1,000 inputs answer ~1.3 MB).
MAX_WHOLE_BYTES = 256 << 20


class UpstreamError(Exception):
    """The upstream could not be reached, or the connection broke before the answer ended."""


class AnswerTooLarge(UpstreamError):
    """A whole answer grew past the pool's ``max_whole_bytes``: the request's own size, not the node's fault."""


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    base_path: str  # an endpoint's path prefix ("/v1"), "" for a node
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"only http:// and https:// upstreams are supported, not {url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), parts.path.rstrip("/"), tls)

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        return self.host if self.port == (443 if self.tls else 80) else f"{self.host}:{self.port}"


class Response:
    """One upstream answer: its status once the head arrives, then the body in chunks. Header
    fields are not kept: nothing downstream reads them (each front door sets its own)."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_error", "_waiter", "completed", "keep_alive", "on_complete", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.completed = 0.0  # perf_counter when the last byte was parsed (0: not yet)
        self.status = 0
        self.keep_alive = False
        # Called with the whole answer as its last byte is parsed, before any waiting task wakes:
        # lets a pass-through answer go out to the client from here (one loop turn and much
        # colder code sooner). It must not raise, nor consume the body.
        self.on_complete: Callable[[Response], None] | None = None

    @property
    def complete(self) -> bool:
        return self.completed > 0.0

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        conn = self._conn
        if not conn.whole:  # a stream is read as the client takes it
            if self._buffered > _HIGH_WATER:
                conn.pause()
            self._wake()
        elif self._buffered > conn.pool.max_whole_bytes:
            # A whole answer wakes its reader only once complete, so it is never paused (pausing
            # waited forever); it is bounded instead.
            conn.overflow(AnswerTooLarge(f"the answer exceeds the router's limit of {conn.pool.max_whole_bytes} bytes "
                                         "for a non-streamed answer (LLMTUNE_ROUTER__MAX_ANSWER_BYTES); stream it or "
                                         "split the request"))  # fmt: skip

    def _fail(self, exc: BaseException) -> None:
        if not self.complete:
            self._error = exc
            self._wake()

    async def chunk(self) -> bytes:
        """The next part of the body; ``b""`` once it has ended."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise UpstreamError(f"the connection broke mid-answer: {self._error}") from self._error
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered <= _HIGH_WATER // 2:
            self._conn.resume()
        return data

    def peek(self) -> bytes:
        """The body received so far, left in place for ``chunk()`` / ``read()``."""
        return b"".join(self._chunks)

    async def read(self) -> bytes:
        parts = []
        while data := await self.chunk():
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Done with it: the connection goes back to the pool if the answer ended cleanly, else closes."""
        self._conn.done(self)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time. Parser callbacks fill ``current``."""

    def __init__(self, pool: UpstreamPool, origin: Origin) -> None:
        self.pool, self.origin = pool, origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: Response | None = None
        self.head: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.whole = False  # wake the sender only once the whole answer is in (non-streaming requests)
        self.closed = False
        self.used = 0  # requests sent on it
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        if self.current is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(UpstreamError(f"malformed HTTP from the upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        self._lost(exc or ConnectionResetError("the upstream closed the connection"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.status = self.parser.get_status_code()
        if not self.whole and self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current._feed(body)

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.current.keep_alive = self.parser.should_keep_alive()
        self.current.completed = time.perf_counter()
        if self.current.on_complete is not None:
            try:
                self.current.on_complete(self.current)
            except Exception:  # a hook's bug must not break the connection's parsing
                log.exception("upstream completion hook failed")
        self.current._wake()
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    # ours
    def _lost(self, exc: BaseException) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
        if self.current is not None:
            self.current._fail(exc)

    def overflow(self, exc: UpstreamError) -> None:
        """The answer in progress is dropped: its sender gets ``exc``, the connection closes."""
        if self.current is not None:
            self.current._chunks.clear()
            self.current._buffered = 0
        self._lost(exc)
        self.close()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def send(self, request: bytes, *, whole: bool, on_complete: Callable[[Response], None] | None) -> Response:
        assert self.transport is not None
        self.whole = whole
        self.current = Response(self)
        self.current.on_complete = on_complete
        self.head = asyncio.get_running_loop().create_future()
        self.used += 1
        self.transport.write(request)
        return self.current

    def done(self, response: Response) -> None:
        if response is not self.current:
            return
        self.current, self.head = None, None
        if response.complete and response.keep_alive and not self.closed and not self._paused:
            self.idle_since = time.monotonic()
            self.pool._put(self)
        else:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


@dataclass
class UpstreamPool:
    """Idle keep-alive connections per origin, reused most-recent first; idle ones older than
    ``idle_s`` are dropped (servers close idle connections: uvicorn after 5 s)."""

    idle_s: float = 4.0
    max_idle_per_origin: int = 256
    max_whole_bytes: int = MAX_WHOLE_BYTES
    _idle: dict[Origin, list[_Connection]] = field(default_factory=dict)
    _tls: ssl.SSLContext | None = None

    async def post(
        self,
        origin: Origin,
        path: str,
        body: bytes,
        *,
        connect_timeout_s: float,
        whole: bool = False,
        on_complete: Callable[[Response], None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send the request and wait for the answer's status and headers, or with ``whole`` for the
        whole answer (one wake-up instead of two; the caller bounds the wait). A reused connection
        that turns out closed is replaced once by a fresh one: nothing reached the upstream's
        application then. ``headers``: more request headers (names and values the caller vouches for)."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
        head = (
            f"POST {origin.base_path}{path} HTTP/1.1\r\nHost: {origin.authority}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        ).encode()
        request = head + body
        conn = self._take(origin)
        if conn is not None:
            response = conn.send(request, whole=whole, on_complete=on_complete)
            try:
                await _headers(conn)
                return response
            except (ConnectionError, UpstreamError):
                if response.status or response._chunks:
                    raise
                conn.close()  # stale: closed by the server while idle; retry below on a new one
        conn = await self._connect(origin, connect_timeout_s)
        response = conn.send(request, whole=whole, on_complete=on_complete)
        try:
            await _headers(conn)
        except ConnectionError as exc:
            raise UpstreamError(f"the connection broke before an answer: {exc}") from exc
        return response

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_s:
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.tls:
            if self._tls is None:  # made once: a context costs ~10 ms (it loads the CA bundle)
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError as exc:
            raise UpstreamError(f"connecting to {origin.host}:{origin.port} timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect to {origin.host}:{origin.port}: {exc.strerror or exc}") from exc
        return conn

    def _put(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self.max_idle_per_origin:
            conn.close()
            return
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def _headers(conn: _Connection) -> None:
    assert conn.head is not None
    try:
        await conn.head
    except asyncio.CancelledError:
        conn.close()  # a request abandoned mid-way leaves the connection in an unknown state
        raise
