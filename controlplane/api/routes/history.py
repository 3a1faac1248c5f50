"""History, diff, rollback and restore (served from the SQL audit log, so they outlive etcd
compaction and a store that lost its data). A revision refers to the store's current epoch
unless ``epoch`` names another (history lists old epochs with ``epoch=all``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from controlplane.api.deps import Admin, Operator, Runtime, Viewer, runtime
from controlplane.api.routes.config import apply_answer
from controlplane.services.errors import BadRequest
from controlplane.services.history import Record
from controlplane.services.tokens import Principal
from schemas.changes import ApplyAnswer, ChangeDetail, DiffAnswer, HistoryPage, HistoryRecord, RestoreAnswer, StoreState
from schemas.common import INT_MAX

router = APIRouter(prefix="/api/v1", tags=["history"])


EPOCH = Query(default=None, max_length=32, pattern=r"^([0-9a-f]{1,32}|all|legacy)$",
              description="The store epoch revisions refer to: the current one by default; 'legacy' for rows "
              "from before epochs; 'all' (history only) lists every epoch.")  # fmt: skip


def _epoch(value: str | None) -> str | None:
    return "" if value == "legacy" else value


def page(records: list[Record]) -> HistoryPage:
    return HistoryPage(items=[
        HistoryRecord(epoch=r.epoch or "legacy", revision=r.revision, at=r.at, actor=r.actor, kind=r.kind, name=r.name,
                      action=r.action, message=r.message, before=r.before, after=r.after)
        for r in records
    ])  # fmt: skip


@router.get("/history", response_model=HistoryPage)
async def history(
    kind: str | None = None,
    name: str | None = None,
    limit: int = Query(default=50, ge=1, le=1000),
    before: int | None = Query(default=None, ge=1, le=INT_MAX, description="Only entries older than this revision (paging)."),
    epoch: str | None = EPOCH,
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> HistoryPage:
    every = epoch == "all"
    records = await rt.config.history(
        kind=kind, name=name, limit=limit, before=before, epoch=None if every else _epoch(epoch), all_epochs=every
    )
    return page(records)


@router.get("/config/{kind}/{name}/history", response_model=HistoryPage)
async def object_history(
    kind: str, name: str, limit: int = Query(default=50, ge=1, le=1000), epoch: str | None = EPOCH,
    rt: Runtime = Depends(runtime), _p: Principal = Viewer,
) -> HistoryPage:  # fmt: skip
    every = epoch == "all"
    records = await rt.config.history(kind=kind, name=name, limit=limit, epoch=None if every else _epoch(epoch), all_epochs=every)
    return page(records)


@router.get("/diff", response_model=DiffAnswer)
async def diff(
    from_revision: int = Query(alias="from", ge=0, le=INT_MAX),
    to_revision: int | None = Query(default=None, alias="to", ge=0, le=INT_MAX, description="Defaults to the current state."),
    epoch: str | None = EPOCH,
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> DiffAnswer:
    if epoch == "all":
        raise BadRequest("a diff compares revisions of one epoch: name it, or leave epoch out for the current one")
    changes, text = await rt.config.diff(from_revision, to_revision, epoch=_epoch(epoch))
    details = [ChangeDetail(kind=c.kind, name=c.name, action=c.action, before=c.before, after=c.after) for c in changes]
    return DiffAnswer(from_revision=from_revision, to_revision=to_revision, changes=details, diff=text)


class RollbackRequest(BaseModel):
    revision: int = Field(ge=0, le=INT_MAX, description="Make the configuration what it was right after this revision.")
    kind: str | None = None
    name: str | None = None
    dry_run: bool = False
    message: str = Field(default="", max_length=2000)
    epoch: str | None = Field(default=None, pattern=r"^([0-9a-f]{1,32}|legacy)$", description="Defaults to the current epoch.")
    force: bool = Field(default=False, description="Needed when the rollback deletes several objects and most or all of them.")


@router.post("/rollback", response_model=ApplyAnswer)
async def rollback(request: RollbackRequest, rt: Runtime = Depends(runtime), who: Principal = Operator) -> ApplyAnswer:
    result = await rt.config.rollback(
        request.revision, kind=request.kind, name=request.name, actor=who.name, message=request.message,
        dry_run=request.dry_run, epoch=_epoch(request.epoch), force=request.force,
    )  # fmt: skip
    return apply_answer(result)


class RestoreRequest(BaseModel):
    dry_run: bool = Field(default=False, description="Show what the restore would write, write nothing.")
    accept_current: bool = Field(
        default=False, description="Keep the store as it is (giving up what the diff shows) and mark it whole again."
    )


@router.post("/restore", response_model=RestoreAnswer)
async def restore(request: RestoreRequest, rt: Runtime = Depends(runtime), who: Principal = Admin) -> RestoreAnswer:
    """Write the audit log's last committed configuration back to a store that lost it (wiped, or
    restored from an older backup) as one new revision; nothing else writes until this runs."""
    result, source = await rt.config.restore(actor=who.name, dry_run=request.dry_run, accept_current=request.accept_current)
    await rt.recovery.check()
    store = StoreState.model_validate(rt.recovery.report.as_dict())
    return RestoreAnswer(**apply_answer(result).model_dump(), source=source, accepted=request.accept_current, store=store)
