"""The control plane's OpenAPI document: what FastAPI derives from the routes, plus the error
answers every operation can give (``application/problem+json``, ``schemas.problem.ProblemDetails``) in
place of FastAPI's own validation-error shape, which this API never sends."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from controlplane.api.errors import PROBLEM
from schemas.common import INT_MAX
from schemas.problem import ProblemDetails

#: Every error status an operation may answer, and when.
ERRORS = {
    400: "The request cannot be carried out as given.",
    401: "No credentials, or credentials that are not valid.",
    403: "The credentials' role may not do this.",
    404: "No such object, job, collection or document.",
    409: "A conflict with the stored state (a stale revision, a store behind its audit log, an invalid stored object).",
    413: "The request or the change set is too large.",
    422: "The request or the configuration does not validate (the fields at fault in errors).",
    502: "An upstream (embedder, generator) failed.",
    503: "A dependency (the store, the database, the job queue) is unavailable: nothing was changed, retry.",
}
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")
SSE = "text/event-stream"
BINARY = "application/octet-stream"


#: One server-sent event as a client parses it (schemathesis checks each event against it).
_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"},
                   "retry": {"type": "integer", "minimum": 0, "maximum": INT_MAX}},
}  # fmt: skip


def answered_as(media_type: str, *, status: int = 200, binary: bool = False) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses`` when its answer is not JSON (server-sent events, NDJSON, a file,
    metrics); with ``response_class=Response``, so that FastAPI does not also claim JSON."""
    schema = _EVENT if media_type == SSE else {"type": "string", "format": "binary"} if binary else {"type": "string"}
    return {status: {"content": {media_type: {"schema": schema}}}}


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app`` with the error answers of every operation."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_ONLY:
        components.pop(name, None)
    problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem.pop("$defs", {}))
    components["ProblemDetails"] = problem
    answer = {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                responses[str(status)] = {"description": description, "content": answer}
    return schema


def install(app: FastAPI) -> None:
    """Serve ``document(app)`` at /openapi.json (built once, on the first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
