"""CRUD of configuration objects and multi-object apply, with ETag / If-Match."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, Query, Response
from pydantic import BaseModel, Field

from controlplane.api.deps import Operator, Runtime, Viewer, parse_revision_header, runtime
from controlplane.services.config import ApplyResult, ConfigService, Listing, ListQuery, require_kind
from controlplane.services.errors import BadRequest, NotFound
from controlplane.services.tokens import Principal
from schemas.changes import ApplyAnswer, ObjectChange
from schemas.common import ConfigObject
from schemas.jsonschema import export_all
from schemas.listing import ConfigDocument, ConfigList
from schemas.registry import KINDS

router = APIRouter(prefix="/api/v1", tags=["config"])


def etag(revision: int | None) -> str:
    return f'"{revision or 0}"'


def apply_answer(result: ApplyResult) -> ApplyAnswer:
    changes = [ObjectChange(kind=c.kind, name=c.name, action=c.action) for c in result.changes]
    return ApplyAnswer(revision=result.revision, dry_run=result.dry_run, changes=changes, diff=result.diff)


def listing(page: Listing) -> Response:
    """Valid documents as ``items``; stored items that do not validate as ``invalid`` (key, kind,
    name, revision, error), so a listing never hides what the store holds."""
    # orjson directly: FastAPI's encoder walks every nested value, which dominates at 10,000 objects.
    body = orjson.dumps({
        "revision": page.revision,
        "items": page.docs,
        "invalid": [bad.summary() for bad in page.invalid],
        "total": page.total,
        "next": "/".join(page.after) if page.after else None,
    })  # fmt: skip
    return Response(body, media_type="application/json", headers={"X-Config-Revision": str(page.revision)})


def list_query(
    limit: int | None = Query(default=None, ge=1, le=1000, description="At most this many objects (all when omitted)."),
    after: str | None = Query(
        default=None, alias="continue", max_length=300, description="The 'next' of the previous page (kind/name)."
    ),
    q: str | None = Query(default=None, max_length=253, description="Only names that contain this text (any case)."),
    selector: str | None = Query(default=None, max_length=2000, description="Only objects with these labels: k=v,k=v."),
) -> ListQuery:
    token: tuple[str, str] | None = None
    if after is not None:
        kind, _, name = after.partition("/")
        if kind not in KINDS or not name:
            raise BadRequest(f"continue {after!r} is not a page token: pass the 'next' of the previous page")
        token = (kind, name)
    labels: dict[str, str] = {}
    for pair in (selector or "").split(","):
        if not pair.strip():
            continue
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise BadRequest(f"selector {selector!r}: give label=value pairs separated by commas")
        labels[key.strip()] = value.strip()
    return ListQuery(limit=limit, after=token, name_contains=q or None, selector=labels)


@router.get("/config", response_model=ConfigList)
async def list_all(query: ListQuery = Depends(list_query), rt: Runtime = Depends(runtime), _p: Principal = Viewer) -> Response:
    """Every kind's objects, sorted by kind then name; page with ``limit`` and ``continue``."""
    return listing(await rt.config.list_documents(None, query))


@router.get("/config/{kind}", response_model=ConfigList)
async def list_kind(
    kind: str, query: ListQuery = Depends(list_query), rt: Runtime = Depends(runtime), _p: Principal = Viewer
) -> Response:
    """One kind's objects, sorted by name; page with ``limit`` and ``continue``."""
    return listing(await rt.config.list_documents(kind, query))


@router.get("/config/{kind}/{name}", response_model=ConfigDocument, response_model_exclude_none=True)
async def get_one(
    kind: str, name: str, response: Response, rt: Runtime = Depends(runtime), _p: Principal = Viewer
) -> ConfigObject:
    obj = await rt.config.get(kind, name)
    response.headers["ETag"] = etag(obj.metadata.revision)
    return obj


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


@router.post("/config/{kind}", status_code=201, response_model=ConfigDocument, response_model_exclude_none=True)
async def create(
    kind: str, response: Response, document: Any = Body(...), rt: Runtime = Depends(runtime), who: Principal = Operator
) -> ConfigObject:
    obj = _parse_for(kind, document)
    result = await rt.config.put(obj, actor=who.name, create_only=True)
    response.headers["ETag"] = etag(result.revision)
    return obj.with_revision(result.revision)


@router.put("/config/{kind}/{name}", response_model=ConfigDocument, response_model_exclude_none=True)
async def replace(
    kind: str,
    name: str,
    response: Response,
    document: Any = Body(...),
    if_match: str | None = Header(default=None),
    if_none_match: str | None = Header(default=None),
    rt: Runtime = Depends(runtime),
    who: Principal = Operator,
) -> ConfigObject:
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
    return obj.with_revision(revision)


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
    """JSON Schema of a kind (``models``, ``routes``, ``rag``, ``experiments``, ``nodepools``, ``classifiers``,
    ``nodestatus``)."""
    schemas = _schemas()
    if kind not in schemas:
        raise NotFound(kind)
    return schemas[kind]
