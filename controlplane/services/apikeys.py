"""The router's API keys: create (the secret returned once), list, get, revoke, rotate. Each is one
conditional store write under ``/<ns>/v1/apikeys/``; routers watch that prefix, so a revocation
reaches every router within the watch latency (no cache to expire)."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from controlplane.services.errors import AlreadyExists, Busy, NotConfigured, NotFound
from controlplane.store.base import ConfigStore
from controlplane.store.errors import Conflict
from controlplane.store.keys import KeySpace
from schemas.apikey import (
    INTERNAL_KEY,
    ApiKey,
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeySpec,
    StoredSecret,
    TenantBudget,
    internal_secret,
    keyed_hash,
    new_secret,
)

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)
KIND = "apikeys"


def internal_headers(pepper: bytes | None) -> dict[str, str]:
    """What the control plane's own requests to the router carry: its key, when keys are on."""
    return {"Authorization": f"Bearer {internal_secret(pepper)[0]}"} if pepper else {}


class ApiKeyService:
    def __init__(self, store: ConfigStore, keys: KeySpace, *, pepper: bytes | None) -> None:
        self._store = store
        self._keys = keys
        self._pepper = pepper

    def _secret(self) -> tuple[str, StoredSecret]:
        if self._pepper is None:
            raise NotConfigured(
                "API keys need a pepper: set LLMTUNE_KEYS__PEPPER_FILE (or LLMTUNE_KEYS__PEPPER) here and on the routers"
            )
        secret, prefix = new_secret()
        return secret, StoredSecret(hash=keyed_hash(self._pepper, secret), prefix=prefix)

    async def create(self, request: ApiKeyCreate, *, actor: str) -> ApiKeyIssued:
        """A new key; its secret is in the answer only (the store keeps its keyed hash)."""
        secret, stored = self._secret()
        spec = ApiKeySpec.model_validate(request.model_dump(exclude={"name", "labels"}))
        key = ApiKey(name=request.name, labels=request.labels, spec=spec, secret=stored, created_at=_now(), created_by=actor)
        try:
            await self._store.put(self._keys.apikey(key.name), key.model_dump_json().encode(), expected_revision=0)
        except Conflict as exc:
            raise AlreadyExists(KIND, key.name) from exc
        log.info("api key %s (%s, tenant %s) created by %s", key.name, stored.prefix, spec.tenant, actor)
        return ApiKeyIssued(**key.public().model_dump(), secret=secret)

    async def ensure_internal(self) -> str | None:
        """The control plane's own key (schemas/apikey.py ``internal_secret``), stored if missing or
        made with another pepper; its secret, for the control plane's requests to the router."""
        if self._pepper is None:
            return None
        secret, prefix = internal_secret(self._pepper)
        stored = StoredSecret(hash=keyed_hash(self._pepper, secret), prefix=prefix)
        key_path = self._keys.apikey(INTERNAL_KEY)
        kv = await self._store.get(key_path)
        with contextlib.suppress(ValidationError):
            if kv is not None and ApiKey.model_validate_json(kv.value).secret == stored:
                return secret
        spec = ApiKeySpec(tenant=INTERNAL_KEY, priority="high")
        key = ApiKey(name=INTERNAL_KEY, labels={"llmtune.dev/internal": "true"}, spec=spec, secret=stored, created_at=_now(),
                     created_by="controlplane")  # fmt: skip
        with contextlib.suppress(Conflict):  # another replica wrote the same key first
            await self._store.put(key_path, key.model_dump_json().encode(), expected_revision=kv.mod_revision if kv else 0)
        return secret

    async def _read(self, name: str) -> tuple[ApiKey, int]:
        kv = await self._store.get(self._keys.apikey(name))
        if kv is None:
            raise NotFound(KIND, name)
        try:
            return ApiKey.model_validate_json(kv.value), kv.mod_revision
        except ValidationError:  # unreadable: revoke still removes it; nothing else can use it
            raise NotFound(KIND, name) from None

    async def get(self, name: str) -> ApiKey:
        return (await self._read(name))[0]

    async def list(self) -> list[ApiKey]:
        return sorted(await _readable(self._store, self._keys.apikeys_prefix(), ApiKey), key=lambda k: k.name)

    async def revoke(self, name: str, *, actor: str) -> None:
        """Delete the key: every router refuses it once its watch delivers the deletion."""
        if await self._store.get(self._keys.apikey(name)) is None:
            raise NotFound(KIND, name)
        await self._store.delete(self._keys.apikey(name))
        log.info("api key %s revoked by %s", name, actor)

    async def rotate(self, name: str, *, grace_s: float, actor: str) -> ApiKeyIssued:
        """A new secret; the current one keeps working for ``grace_s`` (an older one stops now)."""
        secret, stored = self._secret()
        key, revision = await self._read(name)
        now = _now()
        previous = key.secret.model_copy(update={"valid_until": now + timedelta(seconds=grace_s)}) if grace_s > 0 else None
        rotated = key.model_copy(update={"secret": stored, "previous": previous, "rotated_at": now})
        try:
            await self._store.put(self._keys.apikey(name), rotated.model_dump_json().encode(), expected_revision=revision)
        except Conflict as exc:
            raise Busy(f"api key '{name}' was rotated or revoked meanwhile; list the keys and retry") from exc
        log.info("api key %s rotated by %s (old secret valid %.0f s more)", name, actor, grace_s)
        return ApiKeyIssued(**rotated.public().model_dump(), secret=secret)


class TenantBudgets:
    """Tenants' token budgets: set (create or replace), list, delete; routers watch them."""

    def __init__(self, store: ConfigStore, keys: KeySpace) -> None:
        self._store = store
        self._keys = keys

    async def set(self, budget: TenantBudget, *, actor: str) -> TenantBudget:
        await self._store.put(self._keys.tenant(budget.tenant), budget.model_dump_json().encode())
        log.info("budgets of tenant %s set by %s: %s", budget.tenant, actor, budget.budgets.model_dump(exclude_none=True))
        return budget

    async def list(self) -> list[TenantBudget]:
        return sorted(await _readable(self._store, self._keys.tenants_prefix(), TenantBudget), key=lambda b: b.tenant)

    async def delete(self, tenant: str, *, actor: str) -> None:
        if await self._store.get(self._keys.tenant(tenant)) is None:
            raise NotFound("tenants", tenant)
        await self._store.delete(self._keys.tenant(tenant))
        log.info("budgets of tenant %s removed by %s", tenant, actor)


async def _readable(store: ConfigStore, prefix: str, cls: type[T]) -> list[T]:
    """Every object under ``prefix`` that validates; the others are logged and left out."""
    out = []
    for kv in (await store.list(prefix)).items:
        try:
            out.append(cls.model_validate_json(kv.value))
        except ValidationError:
            log.error("ignoring an unreadable %s at %s", cls.__name__, kv.key)
    return out


def _now() -> datetime:
    return datetime.now(UTC)
