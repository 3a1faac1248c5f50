"""The router's own HTTP/1.1 server (router/http.py) and upstream client (router/upstream.py) on
real loopback sockets: keep-alive, pipelining, 100-continue, chunked bodies both ways, limits,
malformed input, disconnects, idle and graceful close, connection reuse and stale connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import pytest

from router.http import HttpServer, Incoming, Limits, Reply, json_reply
from router.upstream import Origin, UpstreamError, UpstreamPool

pytestmark = pytest.mark.asyncio


async def echo(request: Incoming) -> Reply:
    return json_reply({"path": request.path, "query": request.query, "body": request.body.decode(), "headers": request.headers})


class Served:
    def __init__(self, server: HttpServer, port: int) -> None:
        self.server, self.port = server, port
        self.url = f"http://127.0.0.1:{port}"

    async def raw(self, data: bytes, *, read_until_close: bool = True) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        await writer.drain()
        try:
            async with asyncio.timeout(5):
                return await reader.read() if read_until_close else await reader.read(65536)
        finally:
            writer.close()


async def serve(routes: dict[str, dict[str, Callable[[Incoming], Awaitable[Reply]]]], limits: Limits | None = None) -> Served:
    server = HttpServer(routes, limits=limits)
    return Served(server, await server.start("127.0.0.1", 0))


@pytest.fixture
async def echoing() -> AsyncIterator[Served]:
    served = await serve(
        {"/echo": {"POST": echo, "GET": echo}}, Limits(max_body=1000, max_head=2000, keepalive_s=0.3, read_timeout_s=0.3)
    )
    yield served
    await served.server.close()


async def test_keep_alive_query_and_repeated_headers(echoing: Served) -> None:
    async with httpx.AsyncClient(base_url=echoing.url) as client:
        first = await client.post("/echo?a=1", content=b'{"x": 1}', headers=[("x-tag", "a"), ("x-tag", "b")])
        second = await client.get("/echo")
    assert first.status_code == 200 and second.status_code == 200
    body = first.json()
    assert (body["path"], body["query"], body["body"]) == ("/echo", "a=1", '{"x": 1}')
    assert body["headers"]["x-tag"] == "a, b"
    assert first.headers["date"] and first.headers["content-length"] == str(len(first.content))


async def test_pipelined_requests_are_answered_in_order(echoing: Served) -> None:
    one = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
    two = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntwo"
    data = await echoing.raw(one + two)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b'"body":"one"') < data.index(b'"body":"two"')


async def test_expect_100_continue_and_chunked_request_body(echoing: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echoing.port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert b"200 OK" in rest and b'"body":"abcde"' in rest


async def test_limits_and_malformed_requests_get_a_clear_error_and_close(echoing: Served) -> None:
    big = await echoing.raw(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413") and b"exceeds the limit of 1000 bytes" in big and b"connection: close" in big
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"a" * 512 + b"\r\n"
    over = await echoing.raw(chunked * 1 + b"200\r\n" + b"a" * 512 + b"\r\n")
    assert over.startswith(b"HTTP/1.1 413")
    head = await echoing.raw(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 3000 + b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    long_url = await echoing.raw(b"GET /echo?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert long_url.startswith(b"HTTP/1.1 414") and b"request target exceeds 8192 bytes" in long_url
    many = await echoing.raw(b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n")
    assert many.startswith(b"HTTP/1.1 431") and b"more than 100 header fields" in many
    garbage = await echoing.raw(b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400") and b"malformed HTTP request" in garbage


async def test_a_request_that_trickles_in_gets_408(echoing: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echoing.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")  # 7 bytes short, then nothing
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408") and b"did not arrive whole within 0.3 s" in data


async def test_unknown_path_wrong_method_and_head(echoing: Served) -> None:
    async with httpx.AsyncClient(base_url=echoing.url) as client:
        missing = await client.get("/nowhere")
        wrong = await client.delete("/echo")
        head = await client.head("/echo")
        get = await client.get("/echo")
    assert missing.status_code == 404 and missing.json() == {"error": "no such endpoint: GET /nowhere"}
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST" and "not DELETE" in wrong.json()["error"]
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(get.content))


async def test_streamed_reply_and_a_client_that_leaves_cancels_the_handler() -> None:
    ended: list[str] = []
    release = asyncio.Event()

    async def chunks(n: int, hold: bool) -> AsyncIterator[bytes]:
        try:
            for i in range(n):
                yield f"line {i}\n".encode()
                if hold and i == 1:
                    await release.wait()
            ended.append("finished")
        except (asyncio.CancelledError, GeneratorExit):
            ended.append("cancelled")
            raise

    async def stream(request: Incoming) -> Reply:
        return Reply(media_type="application/x-ndjson", stream=chunks(4, hold=request.query == "hold"))

    served = await serve({"/s": {"GET": stream}})
    try:
        async with httpx.AsyncClient(base_url=served.url) as client:
            whole = await client.get("/s")
            assert whole.headers["transfer-encoding"] == "chunked"
            assert whole.text == "".join(f"line {i}\n" for i in range(4))
            async with client.stream("GET", "/s?hold") as resp:
                async for _ in resp.aiter_bytes():
                    break  # leave after the first chunk while the handler waits
        await _until(lambda: len(ended) == 2)
        assert ended == ["finished", "cancelled"]
    finally:
        await served.server.close()


async def test_a_failing_handler_answers_500_without_a_trace() -> None:
    async def boom(_request: Incoming) -> Reply:
        raise RuntimeError("secret internals")

    served = await serve({"/boom": {"GET": boom}})
    try:
        async with httpx.AsyncClient(base_url=served.url) as client:
            resp = await client.get("/boom")
        assert resp.status_code == 500 and "secret" not in resp.text and resp.json()["error"].startswith("internal error")
    finally:
        await served.server.close()


async def test_idle_connections_close_and_close_waits_for_requests_in_flight(echoing: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echoing.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server after keepalive_s
    writer.close()

    gate = asyncio.Event()

    async def slow(_request: Incoming) -> Reply:
        await gate.wait()
        return json_reply({"done": True})

    served = await serve({"/slow": {"GET": slow}})
    async with httpx.AsyncClient(base_url=served.url) as client:
        pending = asyncio.create_task(client.get("/slow"))
        await _until(lambda: any(c.busy for c in served.server.connections))
        closing = asyncio.create_task(served.server.close(grace_s=5))
        await asyncio.sleep(0.1)
        assert not closing.done()
        gate.set()
        resp = await pending
        await closing
    assert resp.json() == {"done": True}


async def test_upstream_pool_reuses_connections_and_replaces_stale_ones() -> None:
    peers: list[object] = []

    async def count(request: Incoming) -> Reply:
        return json_reply({"n": len(peers)})

    class Counting(set):  # type: ignore[type-arg]
        def add(self, conn: object) -> None:
            peers.append(conn)
            super().add(conn)

    served = await serve({"/c": {"POST": count}}, Limits(keepalive_s=0.2))
    served.server.connections = Counting()
    pool = UpstreamPool(idle_s=60)
    origin = Origin.parse(served.url)
    try:
        for _ in range(3):
            resp = await pool.post(origin, "/c", b"{}", connect_timeout_s=2)
            assert orjson.loads(await resp.read()) == {"n": 1}
            resp.release()
        await asyncio.sleep(0.5)  # the server closes the idle connection; the pool finds out on use
        resp = await pool.post(origin, "/c", b"{}", connect_timeout_s=2, whole=True)
        assert resp.complete and orjson.loads(await resp.read()) == {"n": 2}
        resp.release()
    finally:
        pool.close()
        await served.server.close()


async def test_upstream_errors_unreachable_and_broken_mid_answer() -> None:
    pool = UpstreamPool()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.post(Origin.parse("http://127.0.0.1:1"), "/x", b"{}", connect_timeout_s=2)

    async def half(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    broken = await asyncio.start_server(half, "127.0.0.1", 0)
    port = broken.sockets[0].getsockname()[1]
    try:
        resp = await pool.post(Origin.parse(f"http://127.0.0.1:{port}"), "/x", b"{}", connect_timeout_s=2)
        assert resp.status == 200
        with pytest.raises(UpstreamError, match="broke mid-answer"):
            await resp.read()
        resp.release()
    finally:
        broken.close()
        pool.close()
    with pytest.raises(ValueError, match="only http"):
        Origin.parse("ftp://example.com")
    assert Origin.parse("http://vllm:8000/v1/") == Origin("vllm", 8000, "/v1", tls=False)
    assert Origin.parse("https://api.example.com/v1") == Origin("api.example.com", 443, "/v1", tls=True)


async def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_reply_sent_early_is_the_one_the_client_gets() -> None:
    """``answer_now`` writes a whole reply at once (an upstream's callback does, for pass-through
    answers); what the handler returns afterwards is dropped, and the connection stays usable."""

    async def early(request: Incoming) -> Reply:
        assert request.answer_now is not None
        request.answer_now(json_reply({"sent": "early"}, 201))
        request.answer_now(json_reply({"sent": "twice"}))  # ignored: one answer per request
        await asyncio.sleep(0.01)
        return json_reply({"sent": "late"})

    served = await serve({"/early": {"POST": early}, "/echo": {"POST": echo}})
    try:
        async with httpx.AsyncClient(base_url=served.url) as client:
            first = await client.post("/early", content=b"{}")
            after = await client.post("/echo", content=b"next")
        assert (first.status_code, first.json()) == (201, {"sent": "early"})
        assert after.json()["body"] == "next"
    finally:
        await served.server.close()


async def test_a_client_that_never_reads_its_stream_is_dropped() -> None:
    """A streamed answer whose client takes nothing stops within write_timeout_s, and the producer
    (the router's upstream stream, holding a node's slot) is closed."""
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x" * 65536
                await asyncio.sleep(0)
        finally:
            closed.set()

    async def stream(_request: Incoming) -> Reply:
        return Reply(200, media_type="application/octet-stream", stream=endless())

    served = await serve({"/stream": {"GET": stream}}, Limits(write_timeout_s=0.5))
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.transport.set_write_buffer_limits(0)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(closed.wait(), 10)  # never read: the server gives up on it
        writer.close()
    finally:
        await served.server.close()


async def test_interim_answers_and_refusals_wait_behind_a_pipelined_answer() -> None:
    """``100 Continue`` and a refusal (413 here) are written after the answer in progress, never
    inside it (they used to go straight to the transport and corrupt the streamed answer)."""

    async def slow() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"three"):
            await asyncio.sleep(0.1)
            yield part

    async def stream(_request: Incoming) -> Reply:
        return Reply(200, media_type="text/plain", stream=slow())

    served = await serve({"/stream": {"GET": stream}, "/echo": {"POST": echo}}, Limits(max_body=1000))
    try:
        first = b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
        refused = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        data = await served.raw(first + refused)
        whole = b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"
        assert whole in data and data.index(whole) < data.index(b"HTTP/1.1 413"), data
        expect = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(first + expect)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)  # the whole first answer comes first
        assert b"100 Continue" not in head and whole in head
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"ok")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.startswith(b"HTTP/1.1 200") and b'"body":"ok"' in rest
        writer.close()
    finally:
        await served.server.close()


async def test_pipelined_bodies_are_bounded_by_bytes_not_only_by_count() -> None:
    """Requests read ahead of a slow answer are bounded by their bytes (16 x 16 MiB used to be
    accepted): past max_queued_bytes the connection stops being read until the queue drains."""
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        await release.wait()
        yield b"done"

    async def stream(_request: Incoming) -> Reply:
        return Reply(200, media_type="text/plain", stream=slow())

    served = await serve({"/stream": {"GET": stream}, "/echo": {"POST": echo}}, Limits(max_body=1000, max_queued_bytes=1500))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        body = b"x" * 900
        echo_request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n" + body
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(3):  # one read each
            writer.write(echo_request)
            await writer.drain()
            await asyncio.sleep(0.1)
        (conn,) = served.server.connections
        assert conn._read_paused and len(conn.queue) == 2  # 1,800 bytes queued: reading paused, the third unread
        release.set()
        data = b""
        while data.count(b"HTTP/1.1 200") < 4:
            data += await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
    finally:
        await served.server.close()


async def test_connections_past_the_cap_get_a_503_instead_of_memory() -> None:
    served = await serve({"/echo": {"GET": echo}}, Limits(max_connections=2))
    try:
        held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = await served.raw(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503") and b"limit of 2 connections" in refused and b"retry-after: 1" in refused
        for _reader, writer in held:
            writer.close()
        await asyncio.sleep(0.05)
        again = await served.raw(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert again.startswith(b"HTTP/1.1 200")
    finally:
        await served.server.close()


async def test_a_body_of_one_byte_chunks_costs_about_its_size_in_memory() -> None:
    """A chunked body is collected into one buffer: 200,000 one-byte chunks must not cost an object
    each (about 40 bytes apiece, 8 MB for a 200 KB body)."""
    import tracemalloc

    sizes: list[int] = []

    async def measure(request: Incoming) -> Reply:
        sizes.append(len(request.body))
        return json_reply({"bytes": len(request.body)})

    served = await serve({"/echo": {"POST": measure}}, Limits(max_body=1 << 20, read_timeout_s=30, max_chunks=300_000))
    count = 200_000
    wire = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    wire += b"1\r\nx\r\n" * count + b"0\r\n\r\n"
    tracemalloc.start()
    try:
        data = await served.raw(wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await served.server.close()
    assert data.startswith(b"HTTP/1.1 200") and sizes == [count]
    assert peak < 4 * count + (1 << 20), f"collecting a {count}-byte body peaked at {peak} bytes"


async def test_a_body_of_too_many_chunks_is_refused(echoing: Served) -> None:
    """Each chunk costs parser callbacks: a body of thousands of tiny chunks held the event loop
    (healthz p50 0.44 s while one client sent 1-byte chunks). Past max_chunks it is a 413."""
    wire = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 5000 + b"0\r\n\r\n"
    served = await serve({"/echo": {"POST": echo}}, Limits(max_chunks=4096))
    try:
        data = await served.raw(wire)
    finally:
        await served.server.close()
    assert data.startswith(b"HTTP/1.1 413") and b"more than 4096 chunks" in data


async def test_request_bodies_held_by_the_whole_server_are_bounded() -> None:
    """Each connection's bodies are bounded, but many connections together were not (4 clients
    pipelining 16 MiB bodies took the router's RSS up by 1.1 GB): past max_buffered_bytes, a body
    that would take more is answered 503, and what a connection held is given back when it ends."""
    served = await serve({"/echo": {"POST": echo}}, Limits(max_body=4000, max_buffered_bytes=1000, read_timeout_s=5))
    try:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 700\r\n\r\n"
        reader1, writer1 = await asyncio.open_connection("127.0.0.1", served.port)
        writer1.write(head + b"a" * 600)  # 600 bytes held, the rest not sent yet
        await writer1.drain()
        await asyncio.sleep(0.1)
        assert served.server.buffered == 600
        refused = await served.raw(head + b"b" * 700)
        assert refused.startswith(b"HTTP/1.1 503") and b"too many request bodies" in refused
        writer1.write(b"a" * 100)  # the first completes and is answered
        answer = await asyncio.wait_for(reader1.readuntil(b"}"), 5)
        assert answer.startswith(b"HTTP/1.1 200")
        writer1.close()
        await asyncio.sleep(0.1)
        assert served.server.buffered == 0
        assert (await served.raw(head.replace(b"HTTP/1.1", b"HTTP/1.0") + b"c" * 700)).startswith(b"HTTP/1.1 200")
        assert served.server.buffered == 0
    finally:
        await served.server.close()


async def test_bodies_of_requests_being_answered_do_not_hold_the_budget() -> None:
    """The budget bounds bodies on their way in. A long answer (a streamed generation may take
    minutes) must not keep its request's body counted, or many long conversations streaming at
    once would make the router refuse every new request."""
    release = asyncio.Event()

    async def slow(request: Incoming) -> Reply:
        await release.wait()
        return json_reply({"n": len(request.body)})

    served = await serve({"/slow": {"POST": slow}, "/echo": {"POST": echo}},
                         Limits(max_body=4000, max_buffered_bytes=1000, read_timeout_s=5))  # fmt: skip
    try:
        head = b"POST %s HTTP/1.0\r\nHost: x\r\nContent-Length: 700\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(head % b"/slow" + b"a" * 700)  # whole: now being answered, for as long as it takes
        await writer.drain()
        await asyncio.sleep(0.1)
        assert served.server.buffered == 0
        assert (await served.raw(head % b"/echo" + b"b" * 700)).startswith(b"HTTP/1.1 200")
        release.set()
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await served.server.close()
