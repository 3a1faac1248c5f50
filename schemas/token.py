"""Control-plane API tokens as the API shows them: ``TokenPublic`` (never a secret or a hash),
``TokenIssued`` once with the secret; what creating and rotating one takes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.common import INT_MAX, Strict

TOKEN_PREFIX = "llmt_"
Role = Literal["viewer", "operator", "admin"]


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Role = Field(description="viewer, operator or admin")
    expires_in_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86_400, description="Refused after this long.")


class TokenRotate(Strict):
    grace_s: float = Field(default=3600, ge=0, le=30 * 86_400, description="How long the old secret keeps working.")


class TokenPublic(Strict):
    id: int = Field(ge=1, le=INT_MAX)
    name: str
    role: Role
    prefix: str = Field(description="The secret's visible start (llmt_<id>); empty for tokens made before prefixes.")
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    last_used_at: datetime | None = Field(default=None, description="Within a minute: uses are recorded at most that often.")
    rotated_at: datetime | None = None
    previous_valid_until: datetime | None = None
    revoked: bool


class TokenIssued(TokenPublic):
    token: str = Field(description="The secret, in this answer only.")


class TokenList(Strict):
    items: list[TokenPublic]
