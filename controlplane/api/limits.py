"""Request body size limit (a plain ASGI middleware)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.api import errors


class BodyLimit:
    """413 (problem+json) for a body over the limit: at once when Content-Length says so, else as
    soon as the streamed bytes pass it. (FastAPI's max_body_size answers in plain text.)"""

    def __init__(self, app: ASGIApp, limit: int, *, wider: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self._wider = sorted((wider or {}).items(), key=lambda kv: -len(kv[0]))  # path prefix -> its own limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = next((n for prefix, n in self._wider if scope["path"].startswith(prefix)), self.limit)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            await errors.problem(413, "Request too large", self._detail(int(declared), limit))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise errors.BodyTooLarge(self._detail(seen, limit))
            return message

        await self.app(scope, counted, send)

    def _detail(self, size: int, limit: int) -> str:
        setting = "api.max_body_bytes" if limit == self.limit else "rag.max_batch_bytes"
        return f"the request body is at least {size} bytes; the limit is {limit} ({setting})"
