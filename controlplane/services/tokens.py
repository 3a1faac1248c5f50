"""API tokens: issue, verify, list, revoke. Roles are ordered viewer < operator < admin.

Tokens are 256-bit random strings, so a plain SHA-256 is enough to store them safely (slow
password hashes exist for guessable secrets); verification is one indexed lookup per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from controlplane.db.models import ApiToken
from controlplane.services.errors import BadRequest, HistoryUnavailable, NotFound, Unauthorized

TOKEN_PREFIX = "llmt_"


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


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenService:
    def __init__(self, engine: Engine, *, bootstrap_token: str | None = None) -> None:
        self._engine = engine
        self._bootstrap_hash = hash_token(bootstrap_token) if bootstrap_token else None

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except SQLAlchemyError as exc:
            raise HistoryUnavailable(f"metadata database error: {exc.__class__.__name__}") from exc

    def _lookup(self, digest: str) -> Principal | None:
        with Session(self._engine) as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)))
            return Principal(row.name, Role.parse(row.role)) if row else None

    async def authenticate(self, token: str) -> Principal:
        digest = hash_token(token)
        if self._bootstrap_hash and hmac.compare_digest(digest, self._bootstrap_hash):
            return Principal("bootstrap-admin", Role.ADMIN)
        principal: Principal | None = await self._run(self._lookup, digest)
        if principal is None:
            raise Unauthorized("the token is unknown or revoked")
        return principal

    def _create(self, name: str, role: Role, created_by: str) -> tuple[str, TokenInfo]:
        token = new_token()
        with Session(self._engine) as s, s.begin():
            row = ApiToken(
                name=name,
                role=role.name.lower(),
                token_hash=hash_token(token),
                created_at=datetime.now(UTC),
                created_by=created_by,
            )
            s.add(row)
            s.flush()
            info = TokenInfo(row.id, row.name, row.role, row.created_at, row.created_by, False)
        return token, info

    async def create(self, name: str, role: str, *, created_by: str) -> tuple[str, TokenInfo]:
        """Issue a token; the plain token is returned once and never stored."""
        if not name.strip():
            raise BadRequest("a token needs a name")
        result: tuple[str, TokenInfo] = await self._run(self._create, name.strip(), Role.parse(role), created_by)
        return result

    def _list(self) -> list[TokenInfo]:
        with Session(self._engine) as s:
            rows = s.scalars(select(ApiToken).order_by(ApiToken.id)).all()
            return [TokenInfo(r.id, r.name, r.role, r.created_at, r.created_by, r.revoked_at is not None) for r in rows]

    async def list(self) -> list[TokenInfo]:
        result: list[TokenInfo] = await self._run(self._list)
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
