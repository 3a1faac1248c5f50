"""The router's one error → HTTP mapping, in each front door's dialect: Ollama's ``{"error": …}``,
OpenAI's ``{"error": {"message", "type", "code"}}``, problem+json for the native API."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError

from router.admission import QueueRefused
from router.auth import NotAllowed, Unauthenticated
from router.http import Reply, json_reply
from router.limits import LimitsUnavailable, RateLimited, door_headers
from router.policy import ContextTooLong, NoRoute

Dialect = Literal["ollama", "openai", "native"]


class BadInput(Exception):
    """The request body is not what the front door accepts; ``param``: the field at fault, when one is."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UpstreamFailed(Exception):
    """Every candidate tried failed before answering; ``timeout`` says whether the last one timed out."""

    def __init__(self, message: str, *, timeout: bool, attempts: int = 1) -> None:
        super().__init__(message)
        self.timeout, self.attempts = timeout, attempts


def status_of(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, short type, a message a person can act on)."""
    if isinstance(exc, Unauthenticated):
        return 401, "invalid_api_key", str(exc)
    if isinstance(exc, NotAllowed):
        return 403, "permission_denied", str(exc)
    if isinstance(exc, RateLimited):
        return 429, "insufficient_quota" if exc.budget else "rate_limit_exceeded", str(exc)
    if isinstance(exc, LimitsUnavailable):
        return 503, "limits_unavailable", str(exc)
    if isinstance(exc, QueueRefused):
        return 503, "overloaded", f"every node that could serve it is busy: {exc}"
    if isinstance(exc, BadInput):
        return 400, "invalid_request", str(exc)
    if isinstance(exc, ValidationError):
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        return 422, "invalid_request", detail
    if isinstance(exc, ContextTooLong):
        return 400, "context_length_exceeded", str(exc)
    if isinstance(exc, NoRoute):
        return (404, "model_not_found", str(exc)) if exc.unknown_model else (503, "no_route", str(exc))
    if isinstance(exc, UpstreamFailed):
        if exc.timeout:
            return 504, "upstream_timeout", f"no upstream answered in time: {exc}"
        return 502, "upstream_error", f"every upstream tried failed: {exc}"
    raise exc


_CHALLENGE = {"www-authenticate": 'Bearer realm="llmtune"'}
#: OpenAI's own error types and codes where it has them (its SDKs raise by them).
_OPENAI = {
    "context_length_exceeded": ("invalid_request_error", "context_length_exceeded", "messages"),
    "invalid_api_key": ("invalid_request_error", "invalid_api_key", None),
    "permission_denied": ("permission_error", "permission_denied", None),
    "rate_limit_exceeded": ("requests", "rate_limit_exceeded", None),
    "insufficient_quota": ("insufficient_quota", "insufficient_quota", None),
}


def render_error(exc: Exception, dialect: Dialect) -> Reply:
    status, kind, message = status_of(exc)
    headers = _CHALLENGE if status == 401 else None
    if isinstance(exc, RateLimited):
        headers = dict(door_headers(exc.headers, dialect))
    elif isinstance(exc, LimitsUnavailable):
        headers = {"retry-after": "1"}
    elif isinstance(exc, QueueRefused):
        headers = {"retry-after": str(exc.retry_after_s)}
    if dialect == "ollama":
        return json_reply({"error": message}, status, headers=headers)
    if dialect == "openai":
        if kind in _OPENAI:
            kind_, code, param = _OPENAI[kind]
            error = {"message": message, "type": kind_, "param": param, "code": code}
            return json_reply({"error": error}, status, headers=headers)
        if isinstance(exc, BadInput):  # as OpenAI words it, naming the field its SDKs show
            error = {"message": message, "type": "invalid_request_error", "param": exc.param, "code": None}
            return json_reply({"error": error}, status, headers=headers)
        return json_reply({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)
    title = kind.replace("_", " ").capitalize()
    body = {"type": f"https://llmtune.dev/problems/{kind}", "title": title, "status": status, "detail": message}
    return json_reply(body, status, media_type="application/problem+json", headers=headers)
