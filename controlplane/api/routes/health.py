"""Liveness, readiness, Prometheus metrics and the fleet status summary."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controlplane.api.deps import Runtime, Viewer, runtime
from controlplane.api.openapi import answered_as
from controlplane.services.tokens import Principal

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
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
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, responses=answered_as("text/plain"))
async def metrics(rt: Runtime = Depends(runtime)) -> Response:
    return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/status")
async def status(rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> dict[str, Any]:
    """Configuration revision, objects per kind, and the nodes that report live status."""
    config = rt.config_informer.snapshot
    counts: dict[str, int] = {}
    for key in config.items:
        kind = rt.keys.split_config(key)[0]  # any key, even one that is not a valid path
        counts[kind] = counts.get(kind, 0) + 1
    nodes = []
    for key, kv in sorted(rt.status_informer.snapshot.items.items()):
        try:
            nodes.append(json.loads(kv.value))
        except ValueError:
            nodes.append({"node": key.rsplit("/", 1)[-1], "error": "unreadable status"})
    return {
        "revision": config.revision,
        "synced": rt.config_informer.synced,
        "objects": counts,
        "invalid_objects": rt.view.report(),
        "store": rt.recovery.report.as_dict() | {"held": rt.config_informer.held},
        "nodes": nodes,
    }
