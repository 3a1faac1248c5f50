"""The performance monitor's API: ``POST /api/v1/feedback``, ``GET /api/v1/metrics/summary``,
``GET /api/v1/metrics/stream`` (Server-Sent Events), ``GET /api/v1/experiments/{name}/results``,
``POST .../stop`` and ``POST .../promote``, ``GET /api/v1/usage``, ``GET /api/v1/routes/{name}/quality``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Response
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from controlplane.api.deps import Operator, Runtime, Viewer, runtime
from controlplane.api.openapi import SSE, answered_as
from controlplane.services.errors import BadRequest
from controlplane.services.tokens import Principal
from schemas.monitor import (
    ExperimentChange,
    ExperimentResults,
    FeedbackIn,
    FeedbackOut,
    MetricsSummary,
    UsageGroup,
    UsageReport,
)
from schemas.quality import RouteQuality, RouteQualityReport

router = APIRouter(prefix="/api/v1", tags=["monitor"])


@router.post("/feedback", status_code=201, response_model=FeedbackOut)
async def feedback(body: FeedbackIn = Body(...), rt: Runtime = Depends(runtime), who: Principal = Viewer) -> FeedbackOut:
    """Judge one answer by its request id (``x-request-id``): a score from 0 to 1 or thumbs, labels,
    a comment. Any token may send it (feedback is data, not configuration), once per answer: a
    resubmission replaces the token's earlier feedback on it."""
    assert rt.feedback is not None
    return await asyncio.to_thread(functools.partial(rt.feedback.submit, body, submitter=who.name))


@router.get("/metrics/summary", response_model=MetricsSummary)
async def metrics_summary(
    window: str = Query(default="15m", description="How far back: 90s, 15m, 2h, 1d (at most the sample retention)."),
    model: str | None = Query(default=None),
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> dict[str, Any]:  # validated against MetricsSummary on the way out (the dict is shared with live streams)
    """Fleet-wide and per-model figures over a recent window: requests, error rate, latency and
    time-to-first-token percentiles, tokens/s, quality signals, feedback."""
    assert rt.figures is not None
    return await rt.figures.shared(window_s=parse_window(window), model=model)


@router.get("/usage", response_model=UsageReport)
async def usage(
    group_by: UsageGroup = Query(default="tenant", description="key, tenant, model or route."),
    window: str | None = Query(default=None, description="How far back from now (90s, 15m, 2h, 1d); 1d by default."),
    start: datetime | None = Query(default=None, alias="from", description="Start of the range (ISO 8601; instead of window)."),
    end: datetime | None = Query(default=None, alias="to", description="End of the range (ISO 8601; now by default)."),
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> UsageReport:
    """Requests and prompt/completion tokens per API key, tenant, model or route over a range (by
    the minute buckets the monitor folds outcome records into; estimated counts are marked)."""
    if window is not None and start is not None:
        raise BadRequest("give window or from, not both")
    return await rt.usage.report(
        group_by, window_s=parse_window(window) if window else None, start=_unix(start), end=_unix(end)
    )


def _unix(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_window(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit() or float(number) <= 0:
        raise BadRequest(f"window {text!r}: a positive number and a unit, s, m, h or d (for example 15m)")
    return float(number) * units[unit]


@router.get("/experiments/{name}/results", response_model=ExperimentResults)
async def experiment_results(name: str, rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> dict[str, Any]:
    """Per variant: requests, success rate, latency and feedback with 95% intervals, guardrails;
    each variant against the first on the primary metric (test, p-value, verdict); the
    probability of being best."""
    assert rt.experiments is not None
    return await asyncio.to_thread(rt.experiments.results, name)


@router.get("/routes/{name}/quality", response_model=RouteQualityReport)
async def route_quality(name: str, rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> RouteQualityReport:
    """The quality strategy's posterior for a route, decayed to now: per request class and model,
    the evidence (successes, failures, scores), the mean quality with a 95% interval, the model's
    share of the class's recent answers and whether the floor excludes it; ``published_at``: when
    the routers' copy was last written."""
    assert rt.quality is not None
    held = await rt.store.get(rt.keys.quality(name))
    published = RouteQuality.model_validate_json(held.value).updated_at if held is not None else None
    return await asyncio.to_thread(functools.partial(rt.quality.report, name, published_at=published))


class Promotion(BaseModel):
    variant: str = Field(min_length=1, description="The winning variant: its model (and options) become the route's target.")


@router.post("/experiments/{name}/promote", response_model=ExperimentChange)
async def promote(
    name: str, body: Promotion = Body(...), rt: Runtime = Depends(runtime), who: Principal = Operator
) -> ExperimentChange:
    """Write the winner into the route and complete the experiment, as one revision."""
    assert rt.experiment_control is not None
    revision = await rt.experiment_control.promote(name, body.variant, actor=who.name)
    return ExperimentChange(experiment=name, state="completed", promoted=body.variant, revision=revision)


@router.post("/experiments/{name}/stop", response_model=ExperimentChange)
async def stop(name: str, rt: Runtime = Depends(runtime), who: Principal = Operator) -> ExperimentChange:
    """Stop a running experiment: the route's own targets take all its traffic again."""
    assert rt.experiment_control is not None
    revision = await rt.experiment_control.stop(name, actor=who.name)
    return ExperimentChange(experiment=name, state="stopped", revision=revision)


@router.get("/metrics/stream", response_class=Response, responses=answered_as(SSE))
async def metrics_stream(
    window: str = Query(default="15m"),
    every_s: float = Query(default=5.0, ge=1, le=3600, description="Seconds between updates (at least 1)."),
    model: str | None = Query(default=None),
    experiment: str | None = Query(default=None, description="Also send this experiment's results."),
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> EventSourceResponse:
    """Server-Sent Events for live views: a ``summary`` event (as ``/metrics/summary``) and, with
    ``experiment``, an ``experiment`` event (as ``/experiments/{name}/results``), every ``every_s``.
    Streams showing the same window and model share one computation; at most
    ``api.max_metric_streams`` are open at once (503 past it)."""
    assert rt.figures is not None and rt.experiments is not None
    figures, experiments, seconds = rt.figures, rt.experiments, parse_window(window)
    figures.check(seconds)  # a window past the retention is a 400 now, not a broken stream
    if experiment is not None:
        await asyncio.to_thread(experiments.experiment, experiment)  # an unknown experiment is a 404 now
    figures.check_streams()

    async def events() -> AsyncIterator[dict[str, str]]:
        figures.streams += 1  # counted while it runs: a response never started holds no slot
        try:
            while True:
                summary = await figures.shared(window_s=seconds, model=model, max_age_s=every_s)
                yield {"event": "summary", "data": orjson.dumps(summary).decode()}
                if experiment is not None:
                    results = await asyncio.to_thread(experiments.results, experiment)
                    yield {"event": "experiment", "data": orjson.dumps(results).decode()}
                await asyncio.sleep(every_s)
        finally:
            figures.streams -= 1

    return EventSourceResponse(events(), ping=15)
