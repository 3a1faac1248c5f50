"""Floors for a proxy on this machine, with no routing work at all, so the router benchmark can
tell what the router costs apart from what any proxy costs here:

* ``http``: a bare ASGI app on uvicorn that forwards each request with aiohttp;
* ``raw``: the router's own HTTP server and upstream client (router/http.py, router/upstream.py)
  with no routing work: what the router's plumbing costs apart from its decisions;
* ``tcp``: a byte pipe (asyncio streams on uvloop), the cost of the extra hop alone.

    python -m bench.proxy_floor http|raw|tcp UPSTREAM_URL PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
import uvicorn
import uvloop

from router.http import HttpServer, Incoming, Reply
from router.upstream import Origin, UpstreamPool


def _fix(body: bytes) -> bytes:
    return body.replace(b'"model":"bench"', b'"model":"llama3.2:1b"').replace(b'"model": "bench"', b'"model": "llama3.2:1b"')


def make_app(upstream: str) -> Any:
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = _fix(body)
        if session is None:
            session = aiohttp.ClientSession()
        async with session.post(upstream + scope["path"], data=body, headers={"Content-Type": "application/json"}) as resp:
            data = await resp.read()
            status = resp.status
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    return app


async def raw_server(upstream: str, port: int) -> None:
    pool, origin = UpstreamPool(), Origin.parse(upstream)

    async def forward(request: Incoming) -> Reply:
        response = await pool.post(origin, request.path, _fix(request.body), connect_timeout_s=5)
        body = await response.read()
        response.release()
        return Reply(response.status, body)

    server = HttpServer({"/api/chat": {"POST": forward}})
    await server.start("127.0.0.1", port)
    await asyncio.Event().wait()


async def pipe_server(upstream: str, port: int) -> None:
    host, up_port = upstream.removeprefix("http://").rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(up_port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    mode, upstream, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "tcp":
        uvloop.run(pipe_server(upstream, port))
    elif mode == "raw":
        uvloop.run(raw_server(upstream, port))
    else:
        uvicorn.run(make_app(upstream), host="127.0.0.1", port=port, log_level="warning", access_log=False)
