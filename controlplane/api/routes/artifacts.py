"""Files the control plane keeps by digest (``GET|HEAD /api/v1/artifacts/{digest}``): the agents
fetch fine-tuned adapters here, so no storage need be shared with the nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import StreamingResponse

from controlplane.api.deps import Runtime, Viewer, runtime
from controlplane.api.openapi import BINARY, answered_as
from controlplane.services.errors import NotFound
from controlplane.services.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["artifacts"])

DigestPath = Annotated[str, Path(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256:<64 lowercase hex digits>")]


FILE = answered_as(BINARY, binary=True)


@router.get("/artifacts/{digest}", response_class=Response, responses=FILE, operation_id="get_artifact")
@router.head("/artifacts/{digest}", response_class=Response, responses=FILE, operation_id="head_artifact")
async def get_artifact(digest: DigestPath, request: Request, rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> Response:
    """The file's bytes, streamed (``HEAD``: its size only). Its digest is its ETag: it never changes."""
    info = await asyncio.to_thread(rt.artifacts.info, digest)
    if info is None:
        raise NotFound("artifact", digest)
    headers = {"Content-Length": str(info.size), "ETag": f'"{digest}"', "Cache-Control": "private, max-age=31536000, immutable"}
    if request.method == "HEAD":
        return Response(headers=headers, media_type="application/octet-stream")

    async def body() -> AsyncIterator[bytes]:
        for seq in range(info.chunks):
            yield await asyncio.to_thread(rt.artifacts.chunk, digest, seq)

    return StreamingResponse(body(), headers=headers, media_type="application/octet-stream")
