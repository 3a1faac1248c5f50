"""The web UI's playground: a chat sent through the router on behalf of a person, with the router
API key they typed (never the control plane's own key), answered as the router streams it, with
the router's decision headers. Streams are bounded in number and in time."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson

from controlplane.services.errors import ServiceError, TooManyStreams

#: What the router tells about its choice, passed on to the page.
DECISION_HEADERS = ("x-route-name", "x-route-model", "x-route-node", "x-route-variant", "x-route-decision-us",
                    "x-route-attempts", "x-request-id", "x-llmtune-overridden", "retry-after")  # fmt: skip


class RouterUnreachable(ServiceError):
    """The router did not answer (502)."""


class RouterRefused(ServiceError):
    """The router answered with an error: its status and message go to the page as they are."""

    def __init__(self, status: int, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.status, self.headers = status, headers


@dataclass
class Opened:
    response: httpx.Response
    headers: dict[str, str]
    closed: bool = False


def _message(body: bytes, status: int) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500] or f"the router answered {status}"
    if isinstance(data, dict):
        for field in ("detail", "error", "message"):
            if isinstance(data.get(field), str):
                return str(data[field])
            if isinstance(data.get(field), dict) and isinstance(data[field].get("message"), str):
                return str(data[field]["message"])
    return f"the router answered {status}"


class Playground:
    def __init__(self, router_url: str, *, max_streams: int = 8, timeout_s: float = 300.0) -> None:
        # A client of its own, without the control plane's router key: only the person's key is sent.
        self._client = httpx.AsyncClient(base_url=router_url.rstrip("/"), timeout=httpx.Timeout(timeout_s, connect=5.0))
        self.max_streams, self.streams = max_streams, 0

    async def open(self, key: str, body: dict[str, object], *, route: str | None = None) -> Opened:
        """Send the chat; the caller reads ``response`` and must ``close`` it. RouterRefused for
        the router's error answers (401 for a revoked key), RouterUnreachable when it is down."""
        if self.streams >= self.max_streams:
            raise TooManyStreams(f"{self.streams} playground chats are running, the most this control plane serves; retry")
        headers = {"Authorization": f"Bearer {key}"} | ({"x-route-name": route} if route else {})
        request = self._client.build_request("POST", "/api/chat", json=body, headers=headers)
        self.streams += 1
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self.streams -= 1
            raise RouterUnreachable(f"the router at {self._client.base_url} could not be reached: {exc}") from exc
        opened = Opened(response, {h: response.headers[h] for h in DECISION_HEADERS if h in response.headers})
        if response.status_code >= 400:
            try:
                body_bytes = await response.aread()
            finally:
                await self.close(opened)
            raise RouterRefused(response.status_code, _message(body_bytes, response.status_code), opened.headers)
        return opened

    async def close(self, opened: Opened) -> None:
        """Once per chat, however it ends (answered, the page gone before or during the stream)."""
        if not opened.closed:
            opened.closed = True
            self.streams -= 1
            await opened.response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
