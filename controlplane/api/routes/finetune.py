"""Fine-tuning jobs: ``POST /api/v1/fine-tune``, list, get, cancel, logs (JSON and Server-Sent
Events), and dataset uploads (``POST /api/v1/fine-tune/datasets``, JSONL body)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from sse_starlette import EventSourceResponse

from controlplane.api.deps import Operator, Runtime, Viewer, runtime
from controlplane.api.openapi import SSE, answered_as
from controlplane.services.errors import BadRequest
from controlplane.services.finetune import FineTuneService
from controlplane.services.tokens import Principal
from schemas.common import INT_MAX
from schemas.finetune import FINAL_STATES, DatasetInfo, FineTuneJob, FineTuneRequest, JobState, LogLine

router = APIRouter(prefix="/api/v1/fine-tune", tags=["fine-tuning"])


def service(rt: Runtime = Depends(runtime)) -> FineTuneService:
    if rt.finetune is None:
        raise BadRequest("fine-tuning is off: start the control plane with LLMTUNE_FINETUNE__REDIS_URL (the job queue)")
    return rt.finetune


@router.post("", status_code=201, response_model=FineTuneJob)
async def submit(
    response: Response, body: FineTuneRequest = Body(...), ft: FineTuneService = Depends(service), who: Principal = Operator
) -> FineTuneJob:
    """Queue a job. 201 with the new job; 200 with the existing one when ``job_id`` was submitted
    before with the same request; 409 with another. A bad dataset is a 422 naming its line."""
    job, created = await ft.submit(body, actor=who.name)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/api/v1/fine-tune/{job.id}"
    return job


@router.post("/datasets", status_code=201, response_model=DatasetInfo)
async def upload_dataset(request: Request, ft: FineTuneService = Depends(service), _p: Principal = Operator) -> DatasetInfo:
    """Upload JSONL rows (one ``{prompt, response}`` or ``{messages}`` object per line) once, then
    submit jobs with its ``id`` as ``dataset_id``. The same rows give the same id."""
    raw = await request.body()
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the dataset is not UTF-8 text (byte {exc.start})") from exc
    return await ft.upload_dataset(text)


@router.get("", response_model=list[FineTuneJob])
async def list_jobs(
    state: JobState | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=1000),
    ft: FineTuneService = Depends(service),
    _p: Principal = Viewer,
) -> list[FineTuneJob]:
    """Jobs, newest first."""
    return await ft.recent(state=state, limit=limit)


@router.get("/{job_id}", response_model=FineTuneJob)
async def get_job(job_id: str, ft: FineTuneService = Depends(service), _p: Principal = Viewer) -> FineTuneJob:
    return await ft.get(job_id)


@router.post("/{job_id}/cancel", response_model=FineTuneJob)
async def cancel(job_id: str, ft: FineTuneService = Depends(service), _p: Principal = Operator) -> FineTuneJob:
    """A queued job is cancelled at once; a running one stops after its current step (its state
    turns ``cancelled`` within a heartbeat). Ended jobs answer 400."""
    return await ft.cancel(job_id)


@router.get("/{job_id}/logs", response_model=list[LogLine])
async def logs(
    job_id: str,
    after: int = Query(default=0, ge=0, le=INT_MAX, description="Only lines after this id."),
    limit: int = Query(default=1000, ge=1, le=10_000),
    ft: FineTuneService = Depends(service),
    _p: Principal = Viewer,
) -> list[LogLine]:
    """Lines after ``after``, oldest first (a failed job's lines stay)."""
    return await ft.logs(job_id, after=after, limit=limit)


@router.get("/{job_id}/logs/stream", response_class=Response, responses=answered_as(SSE))
async def stream_logs(
    job_id: str,
    after: int = Query(default=0, ge=0, le=INT_MAX),
    every_s: float = Query(default=0.5, ge=0.05, le=60, description="How often the job is looked at."),
    last_event_id: int | None = Header(default=None, ge=0, le=INT_MAX, description="A reconnecting client's last line id."),
    ft: FineTuneService = Depends(service),
    _p: Principal = Viewer,
) -> EventSourceResponse:
    """Server-Sent Events: ``log`` (a line, its id as the event id: reconnect with Last-Event-ID),
    ``progress`` (the job, when its state, progress or attempt changes) and a last ``end`` (the job)."""
    await ft.get(job_id)  # an unknown job is a 404 now, not a broken stream
    last = after if last_event_id is None else last_event_id

    async def events() -> AsyncIterator[dict[str, str]]:
        nonlocal last
        seen: tuple[Any, ...] | None = None
        while True:
            job, lines = await ft.follow(job_id, after=last)
            for line in lines:
                last = line.id
                yield {"event": "log", "id": str(line.id), "data": line.model_dump_json()}
            doc = job.model_dump_json()
            if job.state in FINAL_STATES:
                yield {"event": "end", "data": doc}
                return
            if (job.state, job.progress, job.attempt) != seen:
                seen = (job.state, job.progress, job.attempt)
                yield {"event": "progress", "data": doc}
            await asyncio.sleep(every_s)

    return EventSourceResponse(events(), ping=15)
