"""The REST client llmctl uses; every failure becomes an ``ApiError`` with a one-line message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from cli.context import Context


class ApiError(Exception):
    """A failed call, worded for a person; ``problem`` is the server's problem document, if any."""

    def __init__(self, message: str, *, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.problem = problem or {}


class Client:
    def __init__(self, ctx: Context, *, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {ctx.token}"} if ctx.token else {}
        self.url = ctx.url
        self._http = httpx.Client(base_url=ctx.url, headers=headers, timeout=timeout_s)

    def _check(self, resp: httpx.Response) -> Any:
        if resp.is_success:
            return resp.json() if resp.content else None
        try:
            body = resp.json()
        except ValueError:
            raise ApiError(f"{resp.status_code} {resp.reason_phrase}: {resp.text[:200]}") from None
        detail = body.get("detail", "")
        if isinstance(detail, list):  # a framework error that escaped the problem format
            detail = json.dumps(detail)
        problem = body if isinstance(body, dict) else None
        raise ApiError(f"{resp.status_code} {body.get('title', resp.reason_phrase)}: {detail}", problem=problem)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self._check(self._http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> ApiError:
        hint = "is it running? try 'make llm-tuning-up'"
        return ApiError(f"cannot reach the control plane at {self.url} ({exc.__class__.__name__}); {hint}")

    def readiness(self) -> dict[str, Any]:
        """``/readyz``'s answer, which is 503 (with the failing checks) while not ready."""
        try:
            resp = self._http.get("/readyz")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        data: dict[str, Any] = resp.json()
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.request("DELETE", path, headers=headers or {})

    def lines(self, path: str, body: Any, **params: Any) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield the NDJSON lines of the answer as they arrive."""
        try:
            with self._http.stream("POST", path, json=body, params=params, timeout=None) as resp:
                if not resp.is_success:
                    resp.read()
                    self._check(resp)
                for line in resp.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def events(self, path: str, **params: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        """Server-Sent Events as (event, data) pairs."""
        try:
            with self._http.stream("GET", path, params={k: v for k, v in params.items() if v is not None}, timeout=None) as resp:
                if not resp.is_success:
                    resp.read()
                    self._check(resp)
                event = "message"
                for line in resp.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        yield event, json.loads(line[5:].strip())
                    elif not line:
                        event = "message"
        except httpx.TransportError as exc:
            raise ApiError(f"the watch stream from {self.url} broke ({exc.__class__.__name__})") from exc
