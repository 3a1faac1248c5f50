"""Liveness, readiness, Prometheus metrics and the fleet status summary."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from controlplane.api.deps import Runtime, Viewer, runtime
from controlplane.api.openapi import answered_as
from controlplane.services.tokens import Principal
from schemas.health import HeldStoreState, Liveness, Readiness, ServiceStatus, UnreadableStatus
from schemas.listing import InvalidStored
from schemas.status import NodeStatus

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    return Liveness(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready: see checks."}})
async def readyz(rt: Runtime = Depends(runtime)) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            checks["store"] = f"ok (revision {await rt.store.current_revision()})"
    except Exception as exc:  # readiness reports every failure instead of raising
        checks["store"] = f"down: {exc}"
    try:
        async with asyncio.timeout(2):
            await rt.check_db()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"down: {exc}"
    checks["informer"] = "synced" if rt.config_informer.synced else "syncing"
    # Invalid stored objects do not make the process unready (it serves their last good value),
    # but readiness names them so that whoever looks at it sees them.
    invalid = rt.view.report()
    checks["config"] = "ok" if not invalid else f"ok; {len(invalid)} stored object(s) do not validate: " + ", ".join(
        f"{bad['kind']}/{bad['name']} at revision {bad['revision']}" for bad in invalid[:10]
    )
    store = rt.recovery.report  # behind stays ready: the API is where the operator restores it
    checks["epoch"] = f"ok; behind the audit log ({store.reason}): llmctl restore" if store.state == "behind" else "ok"
    ready = all(v.startswith(("ok", "synced")) for v in checks.values())
    return JSONResponse(Readiness(ready=ready, checks=checks).model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, responses=answered_as("text/plain"))
async def metrics(rt: Runtime = Depends(runtime)) -> Response:
    return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/status", response_model=ServiceStatus)
async def status(rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> ServiceStatus:
    """Configuration revision, objects per kind, and the nodes that report live status."""
    config = rt.config_informer.snapshot
    counts: dict[str, int] = {}
    for key in config.items:
        kind = rt.keys.split_config(key)[0]  # any key, even one that is not a valid path
        counts[kind] = counts.get(kind, 0) + 1
    nodes: list[NodeStatus | UnreadableStatus] = []
    for key, kv in sorted(rt.status_informer.snapshot.items.items()):
        try:
            nodes.append(NodeStatus.model_validate_json(kv.value))
        except ValidationError as exc:
            nodes.append(UnreadableStatus(node=key.rsplit("/", 1)[-1], error=f"unreadable status: {exc.errors()[0]['msg']}"))
    return ServiceStatus(
        revision=config.revision,
        synced=rt.config_informer.synced,
        objects=counts,
        invalid_objects=[InvalidStored.model_validate(bad) for bad in rt.view.report()],
        store=HeldStoreState.model_validate(rt.recovery.report.as_dict() | {"held": rt.config_informer.held}),
        nodes=nodes,
        roles=sorted(rt.roles),
    )
