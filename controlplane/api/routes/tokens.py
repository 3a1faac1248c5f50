"""API token management (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from controlplane.api.deps import Admin, Runtime, runtime
from controlplane.services.tokens import Principal, TokenInfo
from schemas.common import INT_MAX

router = APIRouter(prefix="/api/v1", tags=["auth"])


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(description="viewer, operator or admin")


def info_body(t: TokenInfo) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "created_at": t.created_at.isoformat(),
        "created_by": t.created_by,
        "revoked": t.revoked,
    }


@router.post("/tokens", status_code=201)
async def create_token(request: TokenRequest, rt: Runtime = Depends(runtime), who: Principal = Admin) -> dict[str, Any]:
    """Issue a token. The plain token is in this response only; store it now."""
    token, info = await rt.tokens.create(request.name, request.role, created_by=who.name)
    return {**info_body(info), "token": token}


@router.get("/tokens")
async def list_tokens(rt: Runtime = Depends(runtime), _p: Principal = Admin) -> dict[str, Any]:
    return {"items": [info_body(t) for t in await rt.tokens.list()]}


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=INT_MAX)], rt: Runtime = Depends(runtime), _p: Principal = Admin
) -> None:
    await rt.tokens.revoke(token_id)
