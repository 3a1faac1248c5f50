"""The control plane's one client of the router, for the calls it makes on its own account: RAG's
embeddings (``/api/embed``) and answers (``/api/v1/route``), and the monitor's judge (``/api/chat``).
One URL, one connection pool with the control plane's own API key, one retry policy, one error.

Retries (tenacity): only failures before the router could have begun the work (the connection
refused, not made in time, or closed before any answer: a router restarting or a keep-alive
connection it dropped), three tries with short exponential waits; the router fails over between
nodes by itself. Everything else is ``RouterError`` with the router's own reason, which callers
word for their users. The web UI's playground has a client of its own: its requests carry the
person's key, never this one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

#: The failures after which a request certainly did no work on the router.
RETRIED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class RouterError(Exception):
    """The router could not be reached (``status`` None) or answered ``status`` with ``reason``."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def reason_of(content: bytes) -> str:
    """The router's reason in an error answer: its ``error`` or ``detail`` field, else the text."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode(errors="replace")[:300]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("detail") or body)[:300]
    return str(body)[:300]


class RouterClient:
    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 300.0,
                 connect_timeout_s: float = 5.0, attempts: int = 3, max_connections: int = 64) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self._attempts = attempts
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=dict(headers or {}), limits=httpx.Limits(max_connections=max_connections),
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        )  # fmt: skip

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(retry=retry_if_exception_type(RETRIED), stop=stop_after_attempt(self._attempts),
                             wait=wait_exponential(multiplier=0.2, max=2), reraise=True)  # fmt: skip

    async def post(self, path: str, body: Any, *, timeout_s: float | None = None,
                   headers: Mapping[str, str] | None = None) -> httpx.Response:  # fmt: skip
        """POST ``body`` as JSON; the answer when it is 2xx, else RouterError."""
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
        try:
            async for attempt in self._retrying():
                with attempt:
                    resp = await self._client.post(path, json=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise RouterError(f"the router at {self.url} could not be reached: {exc}") from exc
        if not resp.is_success:
            reason = reason_of(resp.content)
            raise RouterError(f"the router answered {resp.status_code}: {reason}", status=resp.status_code, reason=reason)
        return resp

    async def stream(self, path: str, body: Any, *, timeout_s: float | None = None,
                     headers: Mapping[str, str] | None = None) -> httpx.Response:  # fmt: skip
        """POST ``body`` and return the open 2xx answer to read as it comes (the caller closes it)."""
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
        request = self._client.build_request("POST", path, json=body, headers=headers, timeout=timeout)
        try:
            async for attempt in self._retrying():
                with attempt:
                    resp = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise RouterError(f"the router at {self.url} could not be reached: {exc}") from exc
        if not resp.is_success:
            content = await resp.aread()
            await resp.aclose()
            reason = reason_of(content)
            raise RouterError(f"the router answered {resp.status_code}: {reason}", status=resp.status_code, reason=reason)
        return resp

    async def aclose(self) -> None:
        await self._client.aclose()
