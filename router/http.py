"""The router's HTTP/1.1 server: an asyncio protocol parsed by httptools (the parser uvicorn uses),
dispatching on method and path to handlers that take an ``Incoming`` and give a ``Reply``.

Why not uvicorn + an ASGI framework, as the control plane uses: on this machine uvicorn's protocol
and the ASGI message exchange alone cost ~0.45 ms per proxied request (measured against this
server, same client, same upstream), half of the router's whole budget of 1 ms. The router's needs
are narrow (JSON in; JSON, NDJSON or server-sent events out) and so is this module: keep-alive and
pipelined requests in order, ``Expect: 100-continue``, chunked request bodies (httptools), chunked
streamed answers with write back-pressure, size limits (413/431), malformed requests (400), idle
connections closed after ``keepalive_s``, 408 for a request that trickles in slower than
``read_timeout_s``, a client that goes away cancelling its request (which
releases its upstream), and a graceful close.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import orjson

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Incoming:
    """One request, read whole. Header names are lower-case; repeated headers are joined by ", "."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes | bytearray  # a bytearray when it came in parts (not copied once more into bytes)
    keep_alive: bool = True
    received: float = 0.0  # perf_counter when its last byte was parsed
    answered: float = 0.0  # perf_counter when a whole reply to it was written (0: not yet, or streamed)
    # Sends a whole (not streamed) reply at once, from wherever the handler has it (an upstream's
    # parser callback); the reply the handler returns later is then dropped.
    answer_now: Callable[[Reply], None] | None = None


@dataclass(slots=True)
class Reply:
    """An answer: a whole ``body``, or ``stream`` (sent with chunked transfer encoding)."""

    status: int = 200
    body: bytes = b""
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None


Handler = Callable[[Incoming], Awaitable[Reply]]


def json_reply(
    content: Any, status: int = 200, *, headers: Mapping[str, str] | None = None, media_type: str = "application/json"
) -> Reply:
    return Reply(status, orjson.dumps(content), media_type, headers or {})


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}


class _Date:
    """The Date header, formatted once a second."""

    second, value = 0, b""

    @classmethod
    def header(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, f"date: {email.utils.formatdate(now, usegmt=True)}\r\n".encode()
        return cls.value


def _head(status: int, reply: Reply, *, length: int | None, keep_alive: bool) -> bytes:
    lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode(), _Date.header(),
             b"content-type: ", reply.media_type.encode(), b"\r\n"]  # fmt: skip
    for name, value in reply.headers.items():
        lines.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    lines.append(b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length)
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


@dataclass
class Limits:
    max_body: int = 8 << 20  # bytes of request body
    max_head: int = 64 << 10  # bytes of request line and headers
    max_url: int = 8 << 10  # bytes of the request target (414 past it)
    max_headers: int = 100  # header fields of one request (431 past it)
    max_chunks: int = 4096  # chunks of one chunked body (413 past it): each costs parser callbacks, tiny ones most
    # Request bodies on their way in (partly received, or read ahead of a pipeline) at once, the whole server
    # together (503 past it): many slow clients move RSS by about this much (500 connections each 200 KB into a
    # body took +65 MB with 64 MiB here). Bodies of requests being answered no longer count.
    max_buffered_bytes: int = 12 << 20
    keepalive_s: float = 75.0  # an idle connection is closed after this (longer than clients keep theirs)
    read_timeout_s: float = 30.0  # a request must arrive whole within this once it starts (else 408)
    max_pipelined: int = 16  # requests read ahead of the one being answered before reading pauses
    max_queued_bytes: int = 1 << 20  # bytes of bodies read ahead (pipelined) before reading pauses
    max_connections: int = 4096  # open client connections at most; one more is answered 503 and closed
    write_timeout_s: float = 30.0  # a client that takes nothing of its answer for this long is dropped


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them one after the other."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[Incoming] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        # One deadline at a time, checked by the server's sweep (no timer per request): close when
        # idle too long, or answer 408 when a started request does not arrive whole in time.
        self.deadline: float | None = None
        self.reading = False
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = self._read_paused = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: bytes | bytearray = b""
        self._size = 0
        self._fields = 0  # header fields of the request being read
        self._chunks = 0  # chunks of the body being read
        self._held = 0  # this connection's share of server.buffered: bodies read and not yet being answered
        # Written only once the answers before them are out (pipelining): an interim 100 Continue,
        # and a refusal that ends the connection.
        self._continue_pending = False
        self._refusal: bytes | None = None
        self._queued_bytes = 0  # bodies of the requests in ``queue``

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        if len(self.server.connections) >= self.limits.max_connections:
            body = orjson.dumps({"error": f"the router holds its limit of {self.limits.max_connections} connections; retry"})
            self.transport.write(_head(503, Reply(503, headers={"retry-after": "1"}), length=len(body), keep_alive=False) + body)
            self.closed = True
            self.transport.close()
            return
        self.server.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused: what follows on the wire is not read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.closed and self._refusal is None:  # a limit already answered it
                self._refuse(400, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._release(self._held)
        self.server.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client left: stop its request (and release its upstream)
        self._wake_writer()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size, self._fields = b"", {}, b"", 0, 0
        self._chunks = 0
        self.deadline, self.reading = time.monotonic() + self.limits.read_timeout_s, True

    def on_url(self, url: bytes) -> None:
        self._size += len(url)
        if self._size > self.limits.max_url:
            self._refuse(414, f"the request target exceeds {self.limits.max_url} bytes")
            raise httptools.HttpParserError("request target too long")
        self._url = url if not self._url else self._url + url  # parts only when it spans reads: a bounded few

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value)
        self._fields += 1
        if self._size > self.limits.max_head:
            self._refuse(431, f"the request line and headers exceed {self.limits.max_head} bytes")
            raise httptools.HttpParserError("headers too large")
        if self._fields > self.limits.max_headers:
            self._refuse(431, f"the request has more than {self.limits.max_headers} header fields")
            raise httptools.HttpParserError("too many headers")
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._size = 0
        declared = self._headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > self.limits.max_body:
            self._refuse(413, f"the request body ({declared} bytes) exceeds the limit of {self.limits.max_body} bytes")
            raise httptools.HttpParserError("body too large")
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            if self.task is None and not self.queue:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:  # an earlier answer is still going out: the interim answer waits for it
                self._continue_pending = True

    def on_chunk_header(self) -> None:
        self._chunks += 1
        if self._chunks > self.limits.max_chunks:
            self._refuse(413, f"the chunked request body has more than {self.limits.max_chunks} chunks: send larger chunks")
            raise httptools.HttpParserError("too many chunks")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.limits.max_body:
            self._refuse(413, f"the request body exceeds the limit of {self.limits.max_body} bytes")
            raise httptools.HttpParserError("body too large")
        self._held += len(body)
        self.server.buffered += len(body)
        if self.server.buffered > self.limits.max_buffered_bytes:
            self._refuse(503, "the router holds too many request bodies at once; retry shortly")
            raise httptools.HttpParserError("request bodies over the server's budget")
        if not self._body:
            self._body = body  # the usual case, one part: kept as it came, no copy
        else:  # more parts (chunked, or split across reads): one growing buffer, no per-part objects
            if isinstance(self._body, bytes):
                self._body = bytearray(self._body)
            self._body += body

    def on_message_complete(self) -> None:
        path, _, query = self._url.decode("latin-1").partition("?")
        method = self.parser.get_method().decode("latin-1")
        body, self._body = self._body, b""
        request = Incoming(method, path, query, self._headers, body, self.parser.should_keep_alive(), time.perf_counter())
        self.deadline, self.reading = None, False  # no deadline while it is answered
        self.queue.append(request)
        self._queued_bytes += len(body)
        full = len(self.queue) >= self.limits.max_pipelined or self._queued_bytes >= self.limits.max_queued_bytes
        if full and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._answer())

    # answering
    async def _answer(self) -> None:
        try:
            while self.queue and not self.closed:
                request = self.queue.popleft()
                self._queued_bytes -= len(request.body)
                room = len(self.queue) < self.limits.max_pipelined and self._queued_bytes < self.limits.max_queued_bytes
                if self._read_paused and room and self.transport is not None:
                    self._read_paused = False
                    self.transport.resume_reading()
                # Received: the budget is for bodies on their way in. Requests being answered are bounded by
                # admission and the nodes' slots, and a budget shared with minutes-long answers would refuse
                # new requests whenever many long conversations stream at once.
                self._release(len(request.body))
                kept = await self._one(request)
                if not kept or not request.keep_alive:
                    self._close()
                    return
                self._flush_pending()
        finally:
            self.task = None
        self._flush_pending()
        self._arm_idle()

    def _flush_pending(self) -> None:
        """What waited for the answers before it: a refusal (then the connection closes), or an
        interim 100 Continue when nothing else is queued ahead of it."""
        if self._refusal is not None and not self.queue:
            self._write(self._refusal)
            self._close()
        elif self._continue_pending and not self.queue and not self.closed:
            self._continue_pending = False
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _one(self, request: Incoming) -> bool:
        """Answer one request; False when the connection must close."""
        started = False
        answered: list[Reply] = []

        def answer_now(reply: Reply) -> None:
            if not answered and reply.stream is None:
                answered.append(reply)
                self._write(_head(reply.status, reply, length=len(reply.body), keep_alive=request.keep_alive) + reply.body)
                request.answered = time.perf_counter()

        request.answer_now = answer_now
        try:
            reply = await self.server.dispatch(request)
            if answered:
                return True
            if request.method == "HEAD":  # the head a GET would have, no body
                if reply.stream is not None:
                    await _aclose(reply.stream)
                length = None if reply.stream is not None else len(reply.body)
                self._write(_head(reply.status, reply, length=length, keep_alive=request.keep_alive))
                return True
            if reply.stream is None:
                self._write(_head(reply.status, reply, length=len(reply.body), keep_alive=request.keep_alive) + reply.body)
                request.answered = time.perf_counter()
                return True
            started = True
            return await self._stream(request, reply, reply.stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.path)
            if not started and not answered:
                body = orjson.dumps({"error": "internal error in the router (logged)"})
                self._write(_head(500, Reply(500), length=len(body), keep_alive=False) + body)
            return False
        finally:
            # The callback refers to the request: left set, the pair is a reference cycle that keeps
            # the body alive until the cycle collector runs (16 MiB bodies piled up to 1 GB).
            request.answer_now = None

    async def _stream(self, request: Incoming, reply: Reply, chunks: AsyncIterator[bytes]) -> bool:
        self._write(_head(reply.status, reply, length=None, keep_alive=request.keep_alive))
        finished = False
        try:
            async for chunk in chunks:
                if self.closed:
                    return False
                if chunk:
                    self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    if self._write_paused:
                        await self._drained()
            self._write(b"0\r\n\r\n")
            finished = True
            return True
        finally:
            if not finished:
                await _aclose(chunks)

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def _drained(self) -> None:
        """Wait until the client takes what is buffered; a client that takes nothing for
        ``write_timeout_s`` is dropped, so that it cannot hold its answer's upstream slot."""
        if self._write_paused and not self.closed:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.limits.write_timeout_s):
                    await self._drain
            except TimeoutError:
                log.info("client took nothing of its answer for %g s: dropped", self.limits.write_timeout_s)
                self.closed = True
                if self.transport is not None:
                    self.transport.abort()

    def _wake_writer(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that cannot be read, and close: what follows it on the wire is unknown.
        Behind answers still in progress (pipelining) the refusal waits for them, reading stops."""
        if self.closed or self._refusal is not None:
            return
        body = orjson.dumps({"error": message})
        refusal = _head(status, Reply(status), length=len(body), keep_alive=False) + body
        if self.task is None and not self.queue:
            self._write(refusal)
            self._close()
            return
        self._refusal = refusal
        self.deadline = None
        if self.transport is not None:
            self.transport.pause_reading()

    def _arm_idle(self) -> None:
        if not self.closed and not self.reading:
            self.deadline = time.monotonic() + self.limits.keepalive_s

    def expire(self, now: float) -> None:
        """Called by the server's sweep: act on a deadline that has passed (none while answering)."""
        if self.deadline is None or now < self.deadline or self.closed or self.busy:
            return
        if self.reading:
            self._refuse(408, f"the request did not arrive whole within {self.limits.read_timeout_s:g} s")
        else:
            self._close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
        self._release(self._held)  # what it still held (a body half read, requests never answered)

    def _release(self, size: int) -> None:
        size = min(size, self._held)
        self._held -= size
        self.server.buffered -= size

    @property
    def busy(self) -> bool:
        return self.task is not None


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    """End a generator that will not be read to the end (it accounts for the abandoned answer)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


class HttpServer:
    """Serves ``routes`` ({path: {method: handler}}); 404 and 405 answered here, in JSON."""

    def __init__(self, routes: Mapping[str, Mapping[str, Handler]], *, limits: Limits | None = None) -> None:
        self.routes = routes
        self.limits = limits or Limits()
        self.connections: set[_Connection] = set()
        self.buffered = 0  # bytes of request bodies held now, every connection's together
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def dispatch(self, request: Incoming) -> Reply:
        methods = self.routes.get(request.path)
        if methods is None:
            return json_reply({"error": f"no such endpoint: {request.method} {request.path}"}, 404)
        handler = methods.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            return json_reply(
                {"error": f"{request.path} accepts {allowed}, not {request.method}"}, 405, headers={"allow": allowed}
            )
        return await handler(request)

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with ``port=0``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True, backlog=2048)
        self._sweeper = asyncio.create_task(self._sweep())
        return int(self._server.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        """Deadlines of all connections, a few times per the shortest limit (at most once a second)."""
        every = min(1.0, self.limits.keepalive_s / 4, self.limits.read_timeout_s / 4)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.expire(now)

    async def close(self, *, grace_s: float = 10.0) -> None:
        """Stop listening, let requests being answered finish (up to ``grace_s``), close the rest."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if not conn.busy:
                conn._close()
        busy = [c.task for c in self.connections if c.task is not None]
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
        for conn in list(self.connections):
            conn._close()
        if self._server is not None:
            await self._server.wait_closed()
