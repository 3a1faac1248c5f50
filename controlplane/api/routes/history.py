"""History, diff, rollback and restore (served from the SQL audit log, so they outlive etcd
compaction and a store that lost its data). A revision refers to the store's current epoch
unless ``epoch`` names another (history lists old epochs with ``epoch=all``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from controlplane.api.deps import Admin, Operator, Runtime, Viewer, runtime
from controlplane.api.routes.config import apply_body
from controlplane.services.errors import BadRequest
from controlplane.services.history import Change, Record
from controlplane.services.tokens import Principal
from schemas.common import INT_MAX

router = APIRouter(prefix="/api/v1", tags=["history"])


EPOCH = Query(default=None, max_length=32, pattern=r"^([0-9a-f]{1,32}|all|legacy)$",
              description="The store epoch revisions refer to: the current one by default; 'legacy' for rows "
              "from before epochs; 'all' (history only) lists every epoch.")  # fmt: skip


def _epoch(value: str | None) -> str | None:
    return "" if value == "legacy" else value


def record_body(r: Record) -> dict[str, Any]:
    return {
        "epoch": r.epoch or "legacy",
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
    epoch: str | None = EPOCH,
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> dict[str, Any]:
    every = epoch == "all"
    records = await rt.config.history(
        kind=kind, name=name, limit=limit, before=before, epoch=None if every else _epoch(epoch), all_epochs=every
    )
    return {"items": [record_body(r) for r in records]}


@router.get("/config/{kind}/{name}/history")
async def object_history(
    kind: str, name: str, limit: int = Query(default=50, ge=1, le=1000), epoch: str | None = EPOCH,
    rt: Runtime = Depends(runtime), _p: Principal = Viewer,
) -> dict[str, Any]:  # fmt: skip
    every = epoch == "all"
    records = await rt.config.history(kind=kind, name=name, limit=limit, epoch=None if every else _epoch(epoch), all_epochs=every)
    return {"items": [record_body(r) for r in records]}


@router.get("/diff")
async def diff(
    from_revision: int = Query(alias="from", ge=0, le=INT_MAX),
    to_revision: int | None = Query(default=None, alias="to", ge=0, le=INT_MAX, description="Defaults to the current state."),
    epoch: str | None = EPOCH,
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> dict[str, Any]:
    if epoch == "all":
        raise BadRequest("a diff compares revisions of one epoch: name it, or leave epoch out for the current one")
    changes, text = await rt.config.diff(from_revision, to_revision, epoch=_epoch(epoch))
    return {"from": from_revision, "to": to_revision, "changes": [change_body(c) for c in changes], "diff": text}


class RollbackRequest(BaseModel):
    revision: int = Field(ge=0, le=INT_MAX, description="Make the configuration what it was right after this revision.")
    kind: str | None = None
    name: str | None = None
    dry_run: bool = False
    message: str = Field(default="", max_length=2000)
    epoch: str | None = Field(default=None, pattern=r"^([0-9a-f]{1,32}|legacy)$", description="Defaults to the current epoch.")
    force: bool = Field(default=False, description="Needed when the rollback deletes several objects and most or all of them.")


@router.post("/rollback")
async def rollback(request: RollbackRequest, rt: Runtime = Depends(runtime), who: Principal = Operator) -> dict[str, Any]:
    result = await rt.config.rollback(
        request.revision, kind=request.kind, name=request.name, actor=who.name, message=request.message,
        dry_run=request.dry_run, epoch=_epoch(request.epoch), force=request.force,
    )  # fmt: skip
    return apply_body(result)


class RestoreRequest(BaseModel):
    dry_run: bool = Field(default=False, description="Show what the restore would write, write nothing.")
    accept_current: bool = Field(
        default=False, description="Keep the store as it is (giving up what the diff shows) and mark it whole again."
    )


@router.post("/restore")
async def restore(request: RestoreRequest, rt: Runtime = Depends(runtime), who: Principal = Admin) -> dict[str, Any]:
    """Write the audit log's last committed configuration back to a store that lost it (wiped, or
    restored from an older backup) as one new revision; nothing else writes until this runs."""
    result, source = await rt.config.restore(actor=who.name, dry_run=request.dry_run, accept_current=request.accept_current)
    await rt.recovery.check()
    return apply_body(result) | {"source": source, "accepted": request.accept_current, "store": rt.recovery.report.as_dict()}
