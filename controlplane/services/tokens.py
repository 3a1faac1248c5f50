"""API tokens: issue, verify, list, rotate, revoke. Roles are ordered viewer < operator < admin.

Tokens have the API keys' shape: ``llmt_<8 hex>_<43 characters>`` (256 random bits) with the
visible prefix ``llmt_<8 hex>``; the database keeps an HMAC-SHA256 under the API keys' pepper (a
plain SHA-256 when the control plane has none, and for tokens made before). Tokens are random, so
a fast hash is enough; verification is one indexed lookup per request. A rotated token's old
secret works until its grace ends; the last use is recorded at most once a minute per token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy import Engine, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from controlplane.db.models import ApiToken
from controlplane.services.errors import BadRequest, HistoryUnavailable, NotFound, Unauthorized
from schemas.apikey import keyed_hash, new_secret
from schemas.token import TOKEN_PREFIX, TokenIssued, TokenPublic

TOUCH_EVERY_S = 60.0


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise BadRequest(f"unknown role '{name}'; use viewer, operator or admin") from None


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


def hash_token(token: str) -> str:
    """The unkeyed hash: the bootstrap token's, tokens made before the pepper, none configured."""
    return hashlib.sha256(token.encode()).hexdigest()


def public(row: ApiToken) -> TokenPublic:
    return TokenPublic(
        id=row.id, name=row.name, role=row.role, prefix=row.prefix, created_at=row.created_at, created_by=row.created_by,
        expires_at=row.expires_at, last_used_at=row.last_used_at, rotated_at=row.rotated_at,
        previous_valid_until=row.previous_valid_until if row.previous_hash else None, revoked=row.revoked_at is not None,
    )  # fmt: skip


class TokenService:
    def __init__(self, engine: Engine, *, bootstrap_token: str | None = None, pepper: bytes | None = None) -> None:
        self._engine = engine
        self._pepper = pepper
        self._bootstrap_hash = hash_token(bootstrap_token) if bootstrap_token else None
        self._touched: dict[int, float] = {}  # token id -> monotonic time its last use was written

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except SQLAlchemyError as exc:
            raise HistoryUnavailable(f"metadata database error: {exc.__class__.__name__}") from exc

    def _hash(self, token: str) -> str:
        """What a new token is stored as."""
        return keyed_hash(self._pepper, token) if self._pepper else hash_token(token)

    def _digests(self, token: str) -> list[str]:
        """Every hash a stored token may have: keyed, and unkeyed (made before the pepper)."""
        return list({self._hash(token), hash_token(token)})

    def _lookup(self, token: str) -> Principal | None:
        digests, now = self._digests(token), datetime.now(UTC)
        with Session(self._engine) as s:
            row = s.scalar(
                select(ApiToken).where(
                    ApiToken.revoked_at.is_(None),
                    or_(ApiToken.token_hash.in_(digests), ApiToken.previous_hash.in_(digests)),
                )
            )
            if row is None:
                return None
            if row.token_hash not in digests and (row.previous_valid_until or now) <= now:
                raise Unauthorized(f"token {row.prefix or row.name} was rotated and its old secret's grace has ended")
            if (expires := row.expires_at) is not None and expires <= now:
                raise Unauthorized(f"token {row.prefix or row.name} ('{row.name}') has expired")
            principal = Principal(row.name, Role.parse(row.role))
            touched = self._touched.get(row.id, 0.0)
            if time.monotonic() - touched >= TOUCH_EVERY_S:  # at most one write a minute per token
                self._touched[row.id] = time.monotonic()
                row.last_used_at = now
                s.commit()
            return principal

    async def authenticate(self, token: str) -> Principal:
        if self._bootstrap_hash and hmac.compare_digest(hash_token(token), self._bootstrap_hash):
            return Principal("bootstrap-admin", Role.ADMIN)
        principal: Principal | None = await self._run(self._lookup, token)
        if principal is None:
            raise Unauthorized("the token is unknown or revoked")
        return principal

    def _create(self, name: str, role: Role, created_by: str, expires_in_s: float | None) -> TokenIssued:
        token, prefix = new_secret(TOKEN_PREFIX)
        now = datetime.now(UTC)
        with Session(self._engine) as s, s.begin():
            row = ApiToken(
                name=name, role=role.name.lower(), token_hash=self._hash(token), prefix=prefix, created_at=now,
                created_by=created_by, expires_at=now + timedelta(seconds=expires_in_s) if expires_in_s else None,
            )  # fmt: skip
            s.add(row)
            s.flush()
            return TokenIssued(**public(row).model_dump(), token=token)

    async def create(self, name: str, role: str, *, created_by: str, expires_in_s: float | None = None) -> TokenIssued:
        """Issue a token; the plain token is returned once and never stored."""
        if not name.strip():
            raise BadRequest("a token needs a name")
        result: TokenIssued = await self._run(self._create, name.strip(), Role.parse(role), created_by, expires_in_s)
        return result

    def _list(self) -> list[TokenPublic]:
        with Session(self._engine) as s:
            return [public(r) for r in s.scalars(select(ApiToken).order_by(ApiToken.id)).all()]

    async def list(self) -> list[TokenPublic]:
        result: list[TokenPublic] = await self._run(self._list)
        return result

    def _rotate(self, token_id: int, grace_s: float) -> TokenIssued | None:
        token, prefix = new_secret(TOKEN_PREFIX)
        now = datetime.now(UTC)
        with Session(self._engine) as s, s.begin():
            row = s.get(ApiToken, token_id, with_for_update=True)
            if row is None or row.revoked_at is not None:
                return None
            row.previous_hash = row.token_hash if grace_s > 0 else None
            row.previous_valid_until = now + timedelta(seconds=grace_s) if grace_s > 0 else None
            row.token_hash, row.prefix, row.rotated_at = self._hash(token), prefix, now
            s.flush()
            return TokenIssued(**public(row).model_dump(), token=token)

    async def rotate(self, token_id: int, *, grace_s: float) -> TokenIssued:
        """A new secret for a token; the old one keeps working for ``grace_s``."""
        result: TokenIssued | None = await self._run(self._rotate, token_id, grace_s)
        if result is None:
            raise NotFound("tokens", str(token_id))
        return result

    def _revoke(self, token_id: int) -> bool:
        with Session(self._engine) as s, s.begin():
            row = s.get(ApiToken, token_id)
            if row is None:
                return False
            row.revoked_at = row.revoked_at or datetime.now(UTC)
            return True

    async def revoke(self, token_id: int) -> None:
        if not await self._run(self._revoke, token_id):
            raise NotFound("tokens", str(token_id))
