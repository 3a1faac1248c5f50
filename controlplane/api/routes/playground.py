"""``POST /api/v1/playground/chat``: the web UI's playground, through the router, with the router
API key the person gives in ``X-Router-Key``; the answer streams back as the router's NDJSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Body, Depends, Header
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from controlplane.api.deps import Runtime, Viewer, runtime
from controlplane.api.openapi import answered_as
from controlplane.services.errors import NotConfigured
from controlplane.services.tokens import Principal
from schemas.routing import PlaygroundChat

router = APIRouter(prefix="/api/v1", tags=["playground"])
NDJSON = "application/x-ndjson"
KEY_PATTERN = r"^[\x21-\x7e]+$"  # printable ASCII: it goes into a header


@router.post(
    "/playground/chat",
    response_class=StreamingResponse,
    responses=answered_as(NDJSON) | {429: {"description": "The key's rate limit or budget (the router's answer)."}},
)
async def chat(
    request: PlaygroundChat = Body(...),
    x_router_key: str = Header(min_length=1, max_length=512, pattern=KEY_PATTERN, description="The router API key to chat with."),
    rt: Runtime = Depends(runtime),
    _p: Principal = Viewer,
) -> StreamingResponse:
    """The chat as the router streams it (Ollama's /api/chat lines), with its decision in the
    headers: x-route-name, -model, -node, -variant, -decision-us, -attempts, x-request-id. The
    router's refusals keep their status (401 for a revoked key, 429 past a limit)."""
    if rt.playground is None:
        raise NotConfigured("the playground needs the router's URL (LLMTUNE_ROUTER_CLIENT__URL)")
    playground = rt.playground
    body = {"model": request.model, "messages": [m.model_dump() for m in request.messages], "stream": True}
    if request.options:
        body["options"] = request.options
    opened = await playground.open(x_router_key, body, route=request.route)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for chunk in opened.response.aiter_raw():
                yield chunk
        finally:
            await playground.close(opened)

    # The background close also runs when the page left before the stream began (the generator never started).
    closing = BackgroundTask(playground.close, opened)
    return StreamingResponse(lines(), media_type=NDJSON, headers=opened.headers, background=closing)
