"""API token management (admin only): issue, list, rotate, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from controlplane.api.deps import Admin, Runtime, runtime
from controlplane.services.tokens import Principal
from schemas.common import INT_MAX
from schemas.token import TokenCreate, TokenIssued, TokenList, TokenRotate

router = APIRouter(prefix="/api/v1", tags=["auth"])
TokenId = Annotated[int, Path(ge=1, le=INT_MAX)]


@router.post("/tokens", status_code=201, response_model=TokenIssued)
async def create_token(request: TokenCreate, rt: Runtime = Depends(runtime), who: Principal = Admin) -> TokenIssued:
    """Issue a token. The plain token is in this response only; store it now."""
    return await rt.tokens.create(request.name, request.role, created_by=who.name, expires_in_s=request.expires_in_s)


@router.get("/tokens", response_model=TokenList)
async def list_tokens(rt: Runtime = Depends(runtime), _p: Principal = Admin) -> TokenList:
    return TokenList(items=await rt.tokens.list())


@router.post("/tokens/{token_id}:rotate", response_model=TokenIssued)
async def rotate_token(
    token_id: TokenId, request: TokenRotate | None = None, rt: Runtime = Depends(runtime), _p: Principal = Admin
) -> TokenIssued:
    """A new secret (in this answer only); the old one keeps working for ``grace_s``."""
    return await rt.tokens.rotate(token_id, grace_s=(request or TokenRotate()).grace_s)


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: TokenId, rt: Runtime = Depends(runtime), _p: Principal = Admin) -> None:
    await rt.tokens.revoke(token_id)
