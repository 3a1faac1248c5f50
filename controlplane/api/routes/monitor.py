"""The performance monitor's API: ``POST /api/v1/feedback``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Body, Depends

from controlplane.api.deps import Runtime, Viewer, runtime
from controlplane.services.tokens import Principal
from schemas.monitor import FeedbackIn, FeedbackOut

router = APIRouter(prefix="/api/v1", tags=["monitor"])


@router.post("/feedback", status_code=201, response_model=FeedbackOut)
async def feedback(body: FeedbackIn = Body(...), rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> FeedbackOut:
    """Judge one answer by its request id (``x-request-id``): a score from 0 to 1 or thumbs, labels,
    a comment. Any token may send it: feedback is data, not configuration."""
    assert rt.feedback is not None
    return await asyncio.to_thread(rt.feedback.submit, body)
