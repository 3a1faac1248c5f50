"""``GET /api/v1/watch``: configuration changes as Server-Sent Events (for the UI and llmctl)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sse_starlette import EventSourceResponse

from controlplane.api.deps import Runtime, Viewer, runtime
from controlplane.api.openapi import SSE, answered_as
from controlplane.services.config import require_kind
from controlplane.services.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["watch"])


@router.get("/watch", response_class=Response, responses=answered_as(SSE))
async def watch(kind: str | None = None, rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> EventSourceResponse:
    """Events: ``hello`` (current revision), ``change`` (one per object change), ``resync`` (re-read)."""
    if kind is not None:
        require_kind(kind)
    revision = rt.config_informer.snapshot.revision
    return EventSourceResponse(rt.broadcaster.subscribe(revision=revision, kind=kind), ping=15)
