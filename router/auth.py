"""Who is calling: the router's API keys, kept current by the store's watch, and the check of one
request's credentials against them. A key deleted in the store is refused from the moment the
watch delivers the deletion (no cache TTL); an expired key or a rotated-out secret past its grace
is refused by the clock."""

from __future__ import annotations

import fnmatch
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from schemas.apikey import SECRET_PREFIX, ApiKey, KeyBudgets, KeyLimits, Priority, keyed_hash, prefix_of

Mode = Literal["required", "optional", "off"]
#: Headers a key may come in: ``Authorization: Bearer`` (OpenAI and Ollama clients), ``x-api-key``
#: (Anthropic-style clients and gateways) and ``api-key`` (Azure OpenAI clients).
KEY_HEADERS = ("x-api-key", "api-key")
MAX_SECRET = 256  # longer credentials are not ours: refused without hashing them


class Unauthenticated(Exception):
    """No key, or not a valid one (401)."""


class NotAllowed(Exception):
    """A valid key asked for what it may not use (403)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated key, as the lifecycle needs it per request."""

    name: str
    prefix: str
    tenant: str
    routes: tuple[str, ...]
    models: tuple[str, ...]
    act_for: tuple[str, ...]
    priority: Priority
    limits: KeyLimits
    budgets: KeyBudgets
    expires_at: float | None  # unix time

    def may_use_model(self, asked: str | None) -> bool:
        return _any_match(asked or "", self.models)

    def may_use_route(self, route: str | None) -> bool:
        return _any_match(route or "", self.routes)

    def tenant_for(self, header: str | None) -> str:
        """The tenant a request counts for: the key's, or another named in ``x-tenant`` when the key
        may act for it (NotAllowed otherwise)."""
        if header is None or header == self.tenant:
            return self.tenant
        if not _any_match(header, self.act_for):
            raise NotAllowed(f"key {self.prefix} may not act for tenant '{header}' (its tenant is '{self.tenant}')")
        return header


@functools.lru_cache(maxsize=8192)
def _any_match(value: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, g) for g in globs)


def _caller(key: ApiKey) -> Caller:
    spec = key.spec
    expires = spec.expires_at.timestamp() if spec.expires_at else None
    return Caller(key.name, key.secret.prefix, spec.tenant, tuple(spec.routes), tuple(spec.models), tuple(spec.act_for),
                  spec.priority, spec.limits, spec.budgets, expires)  # fmt: skip


class KeyRing:
    """Keys by the keyed hash of their secrets (a rotated-out secret too, until its grace ends)."""

    def __init__(self, keys: Mapping[str, ApiKey], pepper: bytes | None) -> None:
        self._pepper = pepper
        self._by_hash: dict[str, tuple[Caller, float | None]] = {}
        for key in keys.values():
            caller = _caller(key)
            self._by_hash[key.secret.hash] = (caller, None)
            if key.previous is not None and key.previous.valid_until is not None:
                self._by_hash[key.previous.hash] = (caller, key.previous.valid_until.timestamp())

    def check(self, secret: str) -> Caller:
        """The key ``secret`` belongs to; Unauthenticated when none does (or it expired)."""
        if self._pepper is None or len(secret) > MAX_SECRET or not secret.startswith(SECRET_PREFIX):
            raise Unauthenticated("the API key is not valid")
        digest = keyed_hash(self._pepper, secret)
        found = self._by_hash.get(digest)
        if found is None:
            raise Unauthenticated(f"API key {prefix_of(secret)}… is unknown or revoked")
        caller, until = found
        now = time.time()
        if until is not None and now >= until:
            raise Unauthenticated(f"API key {caller.prefix}… was rotated and its old secret's grace has ended")
        if caller.expires_at is not None and now >= caller.expires_at:
            raise Unauthenticated(f"API key {caller.prefix}… ('{caller.name}') has expired")
        return caller


def presented(headers: Mapping[str, str]) -> str | None:
    """The credential a request carries, in any of the ways clients send one."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name in KEY_HEADERS:
        other = headers.get(name)
        if other:
            return other.strip()
    return None


class Authenticator:
    """The router's one authentication step: ``mode`` and the current key ring."""

    def __init__(self, mode: Mode, ring: KeyRing | None = None) -> None:
        self.mode = mode
        self.ring = ring or KeyRing({}, None)

    def authenticate(self, headers: Mapping[str, str]) -> Caller | None:
        """The caller, or None for an anonymous request where that is allowed; Unauthenticated when
        a required key is missing or not valid, or (optional) an ``llmk_`` key is not valid."""
        if self.mode == "off":
            return None
        secret = presented(headers)
        if self.mode == "optional" and secret is not None and not secret.startswith(SECRET_PREFIX):
            secret = None  # not one of ours (OpenAI SDKs insist on sending some key): an anonymous request
        if secret is None:
            if self.mode == "required":
                raise Unauthenticated(
                    "an API key is required: send 'Authorization: Bearer llmk_…' (or x-api-key); an admin creates one "
                    "with 'llmctl key create'"
                )
            return None
        return self.ring.check(secret)
