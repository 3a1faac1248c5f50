"""Request admission, before any body is read (plain ASGI middlewares): the body size limit, and
authentication of requests that carry a body."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.api import errors
from controlplane.services.errors import Unauthorized

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


#: The unread body of a refused request is not drained: the connection closes after the answer.
_CLOSE = {"connection": "close"}


class AuthenticateFirst:
    """A request to ``/api/v1/`` that carries a body is authenticated before the body is read: an
    unauthenticated client cannot make the process read and parse megabytes for it. The principal
    is kept in ``scope["state"]``, where the route's role check (``deps.require``) finds it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not scope["path"].startswith("/api/v1/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if headers.get(b"content-length", b"0") in (b"0", b"") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # nothing to read: the route authenticates as usual
            return
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if not authorization.lower().startswith("bearer "):
            detail = "send 'Authorization: Bearer <token>' (llmctl reads it from its config or LLMCTL_TOKEN)"
            await errors.problem(401, "Unauthorized", detail, headers=_CLOSE)(scope, receive, send)
            return
        try:
            principal = await scope["app"].state.runtime.tokens.authenticate(authorization[7:].strip())
        except Unauthorized as exc:
            await errors.problem(401, "Unauthorized", str(exc), headers=_CLOSE)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


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
