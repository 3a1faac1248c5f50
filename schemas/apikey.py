"""API keys of the router: what an admin asks for (``ApiKeyCreate``), what the store keeps
(``ApiKey``: a keyed hash and a visible prefix, never the secret), what the API shows
(``ApiKeyPublic``; ``ApiKeyIssued`` once, with the secret), and the secret's format and hash.

A secret is ``llmk_<id>_<43 url-safe characters>`` (256 random bits); ``llmk_<id>`` is its visible
prefix, shown in listings and findable by secret scanners. The store keeps
HMAC-SHA256(pepper, secret): without the server-side pepper a leaked store reveals nothing
usable, and since secrets are random, a fast keyed hash is enough (slow password hashes are for
guessable secrets).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from schemas.common import INT_MAX, LabelKey, LabelValue, Name, Strict

SECRET_PREFIX = "llmk_"
Glob = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/*?\[\]!-]+$")]
Tenant = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Priority = Literal["high", "normal", "low"]
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class KeyLimits(Strict):
    """Rate limits of one key (none: unlimited)."""

    requests_per_minute: int | None = Field(default=None, ge=1, le=INT_MAX)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=INT_MAX, description="Prompt + completion tokens.")
    concurrent: int | None = Field(default=None, ge=1, le=1_000_000, description="Requests in flight at once.")


class KeyBudgets(Strict):
    """Token budgets of one key (prompt + completion; none: unlimited)."""

    tokens_per_day: int | None = Field(default=None, ge=1, le=INT_MAX)
    tokens_per_month: int | None = Field(default=None, ge=1, le=INT_MAX)


class ApiKeySpec(Strict):
    """Who a key is and what it may do."""

    tenant: Tenant = Field(description="The tenant its requests count for (routes match on it, usage is summed by it).")
    routes: list[Glob] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=100,
        description="Route names it may use (globs); a request that matches no route has the empty name, allowed only by '*'.",
    )  # fmt: skip
    models: list[Glob] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=100,
        description="Names it may ask for in 'model' (globs over Model names, aliases and tags as the client sends them).",
    )  # fmt: skip
    act_for: list[Glob] = Field(
        default_factory=list, max_length=100,
        description="Other tenants it may name in an x-tenant header (globs); by default none.",
    )  # fmt: skip
    priority: Priority = Field(default="normal", description="Its class in the admission queue when nodes are full.")
    limits: KeyLimits = Field(default_factory=KeyLimits)
    budgets: KeyBudgets = Field(default_factory=KeyBudgets)
    expires_at: datetime | None = Field(default=None, description="After this instant it is refused (timezone-aware).")


class ApiKeyCreate(ApiKeySpec):
    """``POST /api/v1/keys``: a name, labels and the spec."""

    name: Name
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)


class StoredSecret(Strict):
    hash: Hash
    prefix: str = Field(max_length=32)
    valid_until: datetime | None = None  # a rotated-out secret's end of grace


class ApiKey(Strict):
    """A key as the store holds it (``/<ns>/v1/apikeys/<name>``)."""

    kind: Literal["ApiKey"] = "ApiKey"
    name: Name
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    spec: ApiKeySpec
    secret: StoredSecret
    previous: StoredSecret | None = None  # the secret before the last rotation, valid until its grace ends
    created_at: datetime
    created_by: str
    rotated_at: datetime | None = None

    def public(self) -> ApiKeyPublic:
        return ApiKeyPublic(
            name=self.name, labels=self.labels, prefix=self.secret.prefix, spec=self.spec, created_at=self.created_at,
            created_by=self.created_by, rotated_at=self.rotated_at,
            previous_valid_until=self.previous.valid_until if self.previous else None,
        )  # fmt: skip


class ApiKeyPublic(Strict):
    """A key as the API shows it: everything but hashes."""

    name: Name
    labels: dict[LabelKey, LabelValue]
    prefix: str = Field(description="The secret's visible start (llmk_<id>), to recognise it in a scan or a log.")
    spec: ApiKeySpec
    created_at: datetime
    created_by: str
    rotated_at: datetime | None = None
    previous_valid_until: datetime | None = Field(default=None, description="The rotated-out secret works until then.")


class ApiKeyIssued(ApiKeyPublic):
    """A created or rotated key: ``secret`` is in this answer only."""

    secret: str


class ApiKeyList(Strict):
    items: list[ApiKeyPublic]


class TenantBudget(Strict):
    """A tenant's token budgets, shared by all its keys (``/<ns>/v1/tenants/<tenant>``)."""

    tenant: Tenant
    budgets: KeyBudgets


class TenantBudgetList(Strict):
    items: list[TenantBudget]


class RotateRequest(Strict):
    grace_s: float = Field(default=3600, ge=0, le=30 * 86_400, description="How long the old secret keeps working.")


def new_secret(prefix: str = SECRET_PREFIX) -> tuple[str, str]:
    """A new secret ``<prefix><8 hex>_<43 url-safe characters>`` and its visible start (API keys
    with ``llmk_``, control-plane tokens with ``llmt_``)."""
    ident = secrets.token_hex(4)
    return f"{prefix}{ident}_{secrets.token_urlsafe(32)}", f"{prefix}{ident}"


def prefix_of(secret: str) -> str:
    """The visible start of a secret of that shape (what listings and logs name it by)."""
    head, _, rest = secret.partition("_")
    return f"{head}_{rest.partition('_')[0]}"


INTERNAL_KEY = "llmtune-internal"


def internal_secret(pepper: bytes) -> tuple[str, str]:
    """The control plane's own key (RAG embeddings and answers, the judge), derived from the pepper
    so that every replica and the monitor process hold the same secret without another setting;
    whoever holds the pepper can already verify any key. The control plane stores its hash at start."""
    ident = hmac.new(pepper, b"llmtune-internal-id", hashlib.sha256).hexdigest()[:8]
    body = base64.urlsafe_b64encode(hmac.new(pepper, b"llmtune-internal-secret", hashlib.sha256).digest()).decode().rstrip("=")
    return f"{SECRET_PREFIX}{ident}_{body}", f"{SECRET_PREFIX}{ident}"


def keyed_hash(pepper: bytes, secret: str) -> str:
    """What is kept of a secret (API keys in the store, tokens in the database): HMAC-SHA256 under
    the server-side pepper, hex."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()
