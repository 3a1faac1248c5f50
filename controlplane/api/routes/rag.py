"""RAG: ingest, list and delete documents of a collection; ``POST /api/v1/rag/query``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.responses import StreamingResponse

from controlplane.api.deps import Operator, Runtime, Viewer, runtime
from controlplane.api.openapi import answered_as
from controlplane.services.errors import NotConfigured
from controlplane.services.rag import RagService
from controlplane.services.tokens import Principal
from rag.errors import RagError, UnknownDocument
from schemas.common import INT_MAX
from schemas.rag import RagAnswer, RagDocumentList, RagDocumentsDeleted, RagIngestRequest, RagIngestResult, RagQuery

router = APIRouter(prefix="/api/v1/rag", tags=["rag"])
NDJSON = "application/x-ndjson"


def service(rt: Runtime = Depends(runtime)) -> RagService:
    if rt.rag is None:
        raise NotConfigured("this control-plane replica does not serve RAG (LLMTUNE_ROLES lacks 'rag'): use another")
    return rt.rag


@router.post("/collections/{name}/documents", response_model=RagIngestResult, responses=answered_as(NDJSON))
async def ingest(
    name: str,
    request: RagIngestRequest = Body(...),
    progress: bool = Query(default=False, description="Stream NDJSON progress lines, then the result (or an error line)."),
    rag: RagService = Depends(service),
    _p: Principal = Operator,
) -> Response:
    """Chunk, embed and store documents; unchanged ones (same id and content) are skipped. The batch
    is all or nothing: on any failure no document of it is added or changed."""
    if not progress:
        result = await rag.ingest(name, request.documents)
        return Response(result.model_dump_json(), media_type="application/json")
    rag.resolve(name)  # an unknown collection is a 404, not a 200 with an error line
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def report(done: int, total: int) -> None:
        queue.put_nowait(orjson.dumps({"type": "progress", "embedded": done, "total": total}) + b"\n")

    async def run() -> None:
        try:
            result = await rag.ingest(name, request.documents, progress=report)
            queue.put_nowait(orjson.dumps({"type": "result", **result.model_dump()}) + b"\n")
        except RagError as exc:
            queue.put_nowait(orjson.dumps({"type": "error", "error": str(exc)}) + b"\n")
        finally:
            queue.put_nowait(None)

    async def lines() -> AsyncIterator[bytes]:
        task = asyncio.create_task(run())
        try:
            while (line := await queue.get()) is not None:
                yield line
        finally:
            if not task.done():  # the client left: stop; nothing of the batch is kept
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return StreamingResponse(lines(), media_type=NDJSON)


@router.get("/collections/{name}/documents", response_model=RagDocumentList)
async def documents(
    name: str,
    offset: int = Query(default=0, ge=0, le=INT_MAX),
    limit: int = Query(default=100, ge=1, le=1000),
    rag: RagService = Depends(service),
    _p: Principal = Viewer,
) -> RagDocumentList:
    return await asyncio.to_thread(rag.documents, name, offset=offset, limit=limit)


@router.delete("/collections/{name}/documents/{doc_id:path}", response_model=RagDocumentsDeleted)
async def delete_document(
    name: str, doc_id: str, rag: RagService = Depends(service), _p: Principal = Operator
) -> RagDocumentsDeleted:
    removed = await rag.delete(name, [doc_id])
    if not removed:
        raise UnknownDocument(f"collection '{name}' holds no document '{doc_id}'")
    return RagDocumentsDeleted(collection=name, deleted=removed)


@router.post("/query", response_model=RagAnswer, responses=answered_as(NDJSON))
async def query(request: RagQuery = Body(...), rag: RagService = Depends(service), _p: Principal = Viewer) -> Response:
    """Retrieve (vector + BM25, fused), then answer through the router; ``retrieve_only`` skips the
    answer, ``stream`` sends NDJSON lines (sources, answer pieces, timings)."""
    if request.stream:
        return StreamingResponse(await rag.query_stream(request), media_type=NDJSON)
    return Response((await rag.query(request)).model_dump_json(), media_type="application/json")
