"""Request body size limit (a plain ASGI middleware)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.api import errors


class BodyLimit:
    """413 (problem+json) for a body over the limit: at once when Content-Length says so, else as
    soon as the streamed bytes pass it. (FastAPI's max_body_size answers in plain text.)"""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            await errors.problem(413, "Request too large", self._detail(int(declared)))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise errors.BodyTooLarge(self._detail(seen))
            return message

        await self.app(scope, counted, send)

    def _detail(self, size: int) -> str:
        return f"the request body is at least {size} bytes; the limit is {self.limit} (api.max_body_bytes)"
