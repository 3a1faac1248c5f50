"""The router's API keys (admin only): create, list, show, revoke, rotate; tenants' budgets."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from controlplane.api.deps import Admin, Runtime, runtime
from controlplane.services.tokens import Principal
from schemas.apikey import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyList,
    ApiKeyPublic,
    KeyBudgets,
    RotateRequest,
    Tenant,
    TenantBudget,
    TenantBudgetList,
)
from schemas.common import Name

router = APIRouter(prefix="/api/v1", tags=["api keys"])


@router.post("/keys", status_code=201, response_model=ApiKeyIssued)
async def create_key(request: ApiKeyCreate, rt: Runtime = Depends(runtime), who: Principal = Admin) -> ApiKeyIssued:
    """Create a key. Its ``secret`` is in this answer only: hand it to the service now."""
    return await rt.apikeys.create(request, actor=who.name)


@router.get("/keys", response_model=ApiKeyList)
async def list_keys(rt: Runtime = Depends(runtime), _p: Principal = Admin) -> ApiKeyList:
    return ApiKeyList(items=[key.public() for key in await rt.apikeys.list()])


@router.get("/keys/{name}", response_model=ApiKeyPublic)
async def get_key(name: Name, rt: Runtime = Depends(runtime), _p: Principal = Admin) -> ApiKeyPublic:
    return (await rt.apikeys.get(name)).public()


@router.delete("/keys/{name}", status_code=204)
async def revoke_key(name: Name, rt: Runtime = Depends(runtime), who: Principal = Admin) -> None:
    """Revoke a key: every router refuses it as soon as its watch sees the deletion."""
    await rt.apikeys.revoke(name, actor=who.name)


@router.post("/keys/{name}:rotate", response_model=ApiKeyIssued)
async def rotate_key(
    name: Name, request: RotateRequest | None = None, rt: Runtime = Depends(runtime), who: Principal = Admin
) -> ApiKeyIssued:
    """A new secret (in this answer only); the old one keeps working for ``grace_s``."""
    return await rt.apikeys.rotate(name, grace_s=(request or RotateRequest()).grace_s, actor=who.name)


@router.put("/tenants/{tenant}", response_model=TenantBudget)
async def set_tenant_budget(
    tenant: Tenant, budgets: KeyBudgets, rt: Runtime = Depends(runtime), who: Principal = Admin
) -> TenantBudget:
    """A tenant's token budgets per day and month, shared by all its keys (routers see them at once)."""
    return await rt.tenant_budgets.set(TenantBudget(tenant=tenant, budgets=budgets), actor=who.name)


@router.get("/tenants", response_model=TenantBudgetList)
async def list_tenant_budgets(rt: Runtime = Depends(runtime), _p: Principal = Admin) -> TenantBudgetList:
    return TenantBudgetList(items=await rt.tenant_budgets.list())


@router.delete("/tenants/{tenant}", status_code=204)
async def delete_tenant_budget(tenant: Tenant, rt: Runtime = Depends(runtime), who: Principal = Admin) -> None:
    await rt.tenant_budgets.delete(tenant, actor=who.name)
