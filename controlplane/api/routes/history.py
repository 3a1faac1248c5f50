"""History, diff and rollback (served from the SQL audit log, so they outlive etcd compaction)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from controlplane.api.deps import Operator, Runtime, Viewer, runtime
from controlplane.api.routes.config import apply_body
from controlplane.services.history import Change, Record
from controlplane.services.tokens import Principal
from schemas.common import INT_MAX

router = APIRouter(prefix="/api/v1", tags=["history"])


def record_body(r: Record) -> dict[str, Any]:
    return {
        "revision": r.revision,
        "at": r.at.isoformat(),
        "actor": r.actor,
        "kind": r.kind,
        "name": r.name,
        "action": r.action,
        "message": r.message,
        "before": r.before,
        "after": r.after,
    }


def change_body(c: Change) -> dict[str, Any]:
    return {"kind": c.kind, "name": c.name, "action": c.action, "before": c.before, "after": c.after}


@router.get("/history")
async def history(
    kind: str | None = None,
    name: str | None = None,
    limit: int = Query(default=50, ge=1, le=1000),
    before: int | None = Query(default=None, ge=1, le=INT_MAX, description="Only entries older than this revision (paging)."),
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> dict[str, Any]:
    records = await rt.config.history(kind=kind, name=name, limit=limit, before=before)
    return {"items": [record_body(r) for r in records]}


@router.get("/config/{kind}/{name}/history")
async def object_history(
    kind: str, name: str, limit: int = Query(default=50, ge=1, le=1000), rt: Runtime = Depends(runtime), _p: Principal = Viewer
) -> dict[str, Any]:
    records = await rt.config.history(kind=kind, name=name, limit=limit)
    return {"items": [record_body(r) for r in records]}


@router.get("/diff")
async def diff(
    from_revision: int = Query(alias="from", ge=0, le=INT_MAX),
    to_revision: int | None = Query(default=None, alias="to", ge=0, le=INT_MAX, description="Defaults to the current state."),
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> dict[str, Any]:
    changes, text = await rt.config.diff(from_revision, to_revision)
    return {"from": from_revision, "to": to_revision, "changes": [change_body(c) for c in changes], "diff": text}


class RollbackRequest(BaseModel):
    revision: int = Field(ge=0, le=INT_MAX, description="Make the configuration what it was right after this revision.")
    kind: str | None = None
    name: str | None = None
    dry_run: bool = False
    message: str = Field(default="", max_length=2000)


@router.post("/rollback")
async def rollback(request: RollbackRequest, rt: Runtime = Depends(runtime), who: Principal = Operator) -> dict[str, Any]:
    result = await rt.config.rollback(
        request.revision, kind=request.kind, name=request.name, actor=who.name, message=request.message, dry_run=request.dry_run
    )
    return apply_body(result)
