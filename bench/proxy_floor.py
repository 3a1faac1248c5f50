"""The floor for a Python proxy on this machine: a bare ASGI app on uvicorn that forwards each
request to one upstream with aiohttp and returns its body, with no routing work at all. The
router benchmark sends the same requests through it, so the router's own cost shows as the
difference between the two.

    python bench/proxy_floor.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn


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
        body = body.replace(b'"model":"bench"', b'"model":"llama3.2:1b"').replace(b'"model": "bench"', b'"model": "llama3.2:1b"')
        if session is None:
            session = aiohttp.ClientSession()
        async with session.post(upstream + scope["path"], data=body, headers={"Content-Type": "application/json"}) as resp:
            data = await resp.read()
            status = resp.status
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    return app


if __name__ == "__main__":
    uvicorn.run(make_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
