"""Live tuning and the fleet: ``PUT /api/v1/tune``, ``GET /api/v1/models/status``, ``GET /api/v1/nodes``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse

from controlplane.api.deps import Operator, Runtime, Viewer, runtime
from controlplane.services.fleet import models_status, node_list
from controlplane.services.tokens import Principal
from schemas.fleet import ModelsStatus, NodeList, TuneAnswer
from schemas.tuning import TuneRequest

router = APIRouter(prefix="/api/v1", tags=["fleet"])


@router.put(
    "/tune",
    response_model=TuneAnswer,
    responses={202: {"model": TuneAnswer, "description": "Written; some nodes have not confirmed it, or no wait was asked."}},
)
async def tune(
    request: TuneRequest = Body(...),
    wait: Literal["none", "applied"] = Query(default="none", description="'applied': return once every node applied it."),
    timeout_s: float = Query(default=30.0, alias="timeout", gt=0, le=600, description="Seconds to wait with wait=applied."),
    rt: Runtime = Depends(runtime),
    who: Principal = Operator,
) -> JSONResponse:
    """Patch options / keep_alive / system prompt of one model or a selector's models as one revision.

    200 once every node holding a tuned model applied the revision (``wait=applied``); 202 when the
    change is written but some nodes have not confirmed it (listed with their state) or no wait was asked.
    """
    result = await rt.tuning.tune(request, actor=who.name, wait=wait == "applied", timeout_s=timeout_s)
    answer = TuneAnswer(
        revision=result.revision,
        models=result.models,
        changed=result.changed,
        waited=result.waited,
        complete=result.complete,
        elapsed_ms=round(result.elapsed_ms, 2),
        nodes=result.nodes,
        not_applied=sorted({s.node for s in result.nodes if s.state != "applied"}),
    )
    return JSONResponse(
        answer.model_dump(mode="json"),
        status_code=200 if result.complete else 202,
        headers={"X-Config-Revision": str(result.revision)},
    )


@router.get("/models/status", response_model=ModelsStatus)
async def status(
    model: str | None = Query(default=None, description="Only this Model."),
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> ModelsStatus:
    """Per model: desired versus actual on every node that should hold it; and each node's health."""
    return models_status(rt.view, rt.fleet, model=model)


@router.get("/nodes", response_model=NodeList)
async def nodes(rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> NodeList:
    """Every registered or reporting node: health, Ollama version, heartbeat age, memory, loaded models, lag."""
    return node_list(rt.view, rt.fleet)
