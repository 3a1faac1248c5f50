"""CRUD of configuration objects and multi-object apply, with ETag / If-Match."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, Response
from pydantic import BaseModel, Field

from controlplane.api.deps import Operator, Runtime, Viewer, parse_revision_header, runtime
from controlplane.services.config import ApplyResult, ConfigService, require_kind
from controlplane.services.errors import BadRequest, NotFound
from controlplane.services.tokens import Principal
from controlplane.store.view import InvalidObject
from schemas.changes import ApplyAnswer, ObjectChange
from schemas.common import ConfigObject
from schemas.jsonschema import export_all

router = APIRouter(prefix="/api/v1", tags=["config"])


def etag(revision: int | None) -> str:
    return f'"{revision or 0}"'


def body_of(obj: ConfigObject) -> dict[str, Any]:
    data = obj.content()
    data["metadata"]["revision"] = obj.metadata.revision
    return data


def apply_answer(result: ApplyResult) -> ApplyAnswer:
    changes = [ObjectChange(kind=c.kind, name=c.name, action=c.action) for c in result.changes]
    return ApplyAnswer(revision=result.revision, dry_run=result.dry_run, changes=changes, diff=result.diff)


def listing(docs: list[dict[str, Any]], invalid: list[InvalidObject], revision: int) -> Response:
    """Valid documents as ``items``; stored items that do not validate as ``invalid`` (key, kind,
    name, revision, error), so a listing never hides what the store holds."""
    # orjson directly: FastAPI's encoder walks every nested value, which dominates at 10,000 objects.
    body = orjson.dumps({"revision": revision, "items": docs, "invalid": [bad.summary() for bad in invalid]})
    return Response(body, media_type="application/json", headers={"X-Config-Revision": str(revision)})


@router.get("/config")
async def list_all(rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> Response:
    return listing(*await rt.config.list_documents())


@router.get("/config/{kind}")
async def list_kind(kind: str, rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> Response:
    return listing(*await rt.config.list_documents(kind))


@router.get("/config/{kind}/{name}")
async def get_one(
    kind: str, name: str, response: Response, rt: Runtime = Depends(runtime), _p: Principal = Viewer
) -> dict[str, Any]:
    obj = await rt.config.get(kind, name)
    response.headers["ETag"] = etag(obj.metadata.revision)
    return body_of(obj)


def _parse_for(kind: str, document: Any, *, name: str | None = None) -> ConfigObject:
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object with 'metadata' and 'spec'")
    cls = require_kind(kind)
    doc_kind = document.get("kind")
    if doc_kind is not None and doc_kind != cls.model_fields["kind"].default:
        raise BadRequest(f"the document's kind '{doc_kind}' does not belong under /config/{kind}")
    obj = ConfigService.parse(document, kind=kind)
    if name is not None and obj.name != name:
        raise BadRequest(f"metadata.name '{obj.name}' does not match the URL name '{name}'")
    return obj


@router.post("/config/{kind}", status_code=201)
async def create(
    kind: str, response: Response, document: Any = Body(...), rt: Runtime = Depends(runtime), who: Principal = Operator
) -> dict[str, Any]:
    obj = _parse_for(kind, document)
    result = await rt.config.put(obj, actor=who.name, create_only=True)
    response.headers["ETag"] = etag(result.revision)
    return body_of(obj.with_revision(result.revision))


@router.put("/config/{kind}/{name}")
async def replace(
    kind: str,
    name: str,
    response: Response,
    document: Any = Body(...),
    if_match: str | None = Header(default=None),
    if_none_match: str | None = Header(default=None),
    rt: Runtime = Depends(runtime),
    who: Principal = Operator,
) -> dict[str, Any]:
    """Create or replace. ``If-Match`` makes it compare-and-set; ``If-None-Match: *`` create-only.

    Without a precondition the write still commits only if the object did not change between
    the server's read and its write (last writer wins, but never a lost concurrent update).
    """
    obj = _parse_for(kind, document, name=name)
    expected = parse_revision_header(if_match, "If-Match")
    if expected == -1:  # "*": must exist, any revision
        expected = await rt.config.stored_revision(kind, name)
    result = await rt.config.put(obj, actor=who.name, expected_revision=expected, create_only=if_none_match == "*")
    revision = result.revision_of((kind, name))
    response.headers["ETag"] = etag(revision)
    return body_of(obj.with_revision(revision))


@router.delete("/config/{kind}/{name}", response_model=ApplyAnswer)
async def delete(
    kind: str, name: str, if_match: str | None = Header(default=None), rt: Runtime = Depends(runtime), who: Principal = Operator
) -> ApplyAnswer:
    expected = parse_revision_header(if_match, "If-Match")
    result = await rt.config.delete(kind, name, actor=who.name, expected_revision=None if expected == -1 else expected)
    return apply_answer(result)


class ObjectRef(BaseModel):
    kind: str = Field(description="Plural kind, e.g. 'models'.")
    name: str


class ApplyRequest(BaseModel):
    objects: list[dict[str, Any]] = Field(default_factory=list, description="Documents to create or update.")
    delete: list[ObjectRef] = Field(default_factory=list, description="Objects to delete in the same revision.")
    dry_run: bool = False
    message: str = Field(default="", max_length=2000)
    force: bool = Field(default=False, description="Needed when the change set deletes several objects and most or all of them.")


@router.post("/config:apply", response_model=ApplyAnswer)
async def apply(request: ApplyRequest, rt: Runtime = Depends(runtime), who: Principal = Operator) -> ApplyAnswer:
    """Apply a change set atomically (one revision); ``dry_run`` returns the diff and writes nothing."""
    if not request.objects and not request.delete:
        raise BadRequest("the change set is empty: give 'objects' and/or 'delete'")
    objects = [ConfigService.parse(doc) for doc in request.objects]
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        key = (type(obj).plural, obj.name)
        if key in seen:
            raise BadRequest(f"{key[0]}/{key[1]} appears twice in the change set")
        seen.add(key)
    for ref in request.delete:
        require_kind(ref.kind)
    deletes = [(r.kind, r.name) for r in request.delete]
    result = await rt.config.apply(
        objects, deletes=deletes, actor=who.name, message=request.message, dry_run=request.dry_run, force=request.force
    )
    return apply_answer(result)


@functools.cache
def _schemas() -> dict[str, dict[str, Any]]:
    return export_all()


@router.get("/schemas/{kind}")
async def json_schema(kind: str, _p: Principal = Viewer) -> dict[str, Any]:
    """JSON Schema of a kind (``models``, ``routes``, ``rag``, ``experiments``, ``nodepools``, ``nodestatus``)."""
    schemas = _schemas()
    if kind not in schemas:
        raise NotFound(kind)
    return schemas[kind]
