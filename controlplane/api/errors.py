"""The only mapping of domain and store errors to HTTP: ``application/problem+json`` answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.services.errors import (
    AlreadyExists,
    BadRequest,
    Busy,
    Forbidden,
    HistoryUnavailable,
    InUse,
    Invalid,
    NotConfigured,
    NotFound,
    QueueUnavailable,
    StaleRevision,
    StoreBehind,
    TooLarge,
    TooManyStreams,
    Unauthorized,
    UnknownRequest,
    Unprocessable,
)
from controlplane.services.playground import RouterRefused, RouterUnreachable
from controlplane.store.errors import Conflict, LeaseLost, StoreError, StoreRejected, StoreUnavailable
from controlplane.store.view import StoredInvalid
from rag.errors import (
    BadInput,
    DocumentTooLarge,
    EmbeddingFailed,
    GenerationFailed,
    RerankUnavailable,
    UnknownCollection,
    UnknownDocument,
    VectorStoreUnavailable,
)

PROBLEM = "application/problem+json"
_KIND_TAGS = {"Model", "Route", "RagCollection", "Experiment", "NodePool", "Classifier"}


class BodyTooLarge(StarletteHTTPException):
    """Raised while a request body streams in past the limit (answered as 413 problem+json)."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """``extra``: members of this problem type beyond RFC 9457's (e.g. ``stored`` for an invalid stored object)."""
    body: dict[str, Any] = {
        "type": f"https://llmtune.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic errors as ``{field, message}``; the discriminator tag (the kind) is left out of paths."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        if loc and loc[0] in _KIND_TAGS:
            loc = loc[1:]
        path = ""
        for part in loc:
            path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
        out.append({"field": path or "(document)", "message": err.get("msg", "invalid")})
    return out


def install(app: FastAPI) -> None:
    """Register every handler; routes raise domain errors and never build error responses."""

    def on(exc_type: type[Exception], status: int, title: str) -> None:
        async def handler(_request: Request, exc: Exception) -> JSONResponse:
            return problem(status, title, str(exc))

        app.add_exception_handler(exc_type, handler)

    on(NotFound, 404, "Not found")
    on(AlreadyExists, 409, "Already exists")
    on(Busy, 409, "Conflict")
    on(TooManyStreams, 503, "Too many streams")
    on(NotConfigured, 503, "Not configured")
    on(StoreBehind, 409, "Store behind the audit log")
    on(InUse, 409, "Conflict")
    on(BadRequest, 400, "Bad request")
    on(Unauthorized, 401, "Unauthorized")
    on(Forbidden, 403, "Forbidden")
    on(LeaseLost, 409, "Lease lost")
    on(StoreRejected, 413, "Change set too large")
    on(TooLarge, 413, "Change set too large")
    on(UnknownCollection, 404, "Not found")
    on(UnknownRequest, 404, "Not found")
    on(UnknownDocument, 404, "Not found")
    on(BadInput, 422, "Invalid request")
    on(DocumentTooLarge, 413, "Request too large")
    on(EmbeddingFailed, 502, "Embedding failed")
    on(RerankUnavailable, 409, "No reranker")
    on(GenerationFailed, 502, "Generation failed")
    on(RouterUnreachable, 502, "Router unreachable")

    async def refused(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RouterRefused)  # the router's own answer: its status, its words
        return problem(exc.status, "Refused by the router", str(exc), headers=exc.headers)

    app.add_exception_handler(RouterRefused, refused)

    async def stale(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StaleRevision)
        return problem(
            409, "Conflict", str(exc), errors=[{"field": f"{exc.kind}/{exc.name}", "message": f"current revision {exc.actual}"}]
        )

    async def invalid(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Invalid)
        errors = [{"field": p.field, "object": f"{p.kind}/{p.name}", "message": p.message} for p in exc.problems]
        return problem(422, "Invalid configuration", str(exc), errors=errors)

    async def schema(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ValidationError | RequestValidationError)
        errors = field_errors(exc.errors())
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid document", detail, errors=errors)

    async def unavailable(_r: Request, exc: Exception) -> JSONResponse:
        return problem(503, "Service unavailable", f"{exc}; nothing was changed, retry later", headers={"Retry-After": "1"})

    async def store_conflict(_r: Request, exc: Exception) -> JSONResponse:
        return problem(409, "Conflict", str(exc))

    async def http(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not found", 413: "Request too large"}.get(exc.status_code, str(exc.detail))
        return problem(exc.status_code, title, str(exc.detail), headers=dict(exc.headers) if exc.headers else None)

    async def stored_invalid(_r: Request, exc: Exception) -> JSONResponse:
        # Not 422: the request is fine, the store holds bytes another writer (or another version) put
        # there. 409: the resource's current state conflicts with serving it; a valid PUT, an apply,
        # a delete or `llmctl restore` repairs it.
        assert isinstance(exc, StoredInvalid)
        bad = exc.item
        detail = (f"the store holds {bad.kind}/{bad.name} at revision {bad.revision}, but it does not validate: {bad.error}. "
                  f"Write a valid {bad.kind}/{bad.name} (PUT or llmctl apply) or delete it to repair it")  # fmt: skip
        stored = {**bad.summary(), "raw": bad.raw}
        return problem(409, "Invalid stored object", detail, errors=[{"field": "(stored)", "message": bad.error}],
                       extra={"stored": stored})  # fmt: skip

    async def unprocessable(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Unprocessable)
        return problem(422, "Invalid request", str(exc), errors=exc.errors)

    app.add_exception_handler(StoredInvalid, stored_invalid)
    app.add_exception_handler(Unprocessable, unprocessable)
    app.add_exception_handler(QueueUnavailable, unavailable)
    app.add_exception_handler(StaleRevision, stale)
    app.add_exception_handler(Invalid, invalid)
    app.add_exception_handler(ValidationError, schema)
    app.add_exception_handler(RequestValidationError, schema)
    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_exception_handler(HistoryUnavailable, unavailable)
    app.add_exception_handler(Conflict, store_conflict)
    app.add_exception_handler(StoreError, unavailable)
    app.add_exception_handler(VectorStoreUnavailable, unavailable)
    app.add_exception_handler(StarletteHTTPException, http)
