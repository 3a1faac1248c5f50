"""The audit log in SQL: pending → committed change sets, per-object and global history, and the
configuration state at any past revision (so diff and rollback work after etcd compaction)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from controlplane.db.models import AuditEntry
from controlplane.services.errors import HistoryUnavailable

Action = Literal["create", "update", "delete"]
ObjectKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    name: str
    action: Action
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    before_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Record:
    revision: int
    at: datetime
    actor: str
    kind: str
    name: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    message: str


def _record(row: AuditEntry) -> Record:
    return Record(
        revision=row.revision or 0,
        at=row.at,
        actor=row.actor,
        kind=row.kind,
        name=row.name,
        action=row.action,
        before=row.before,
        after=row.after,
        message=row.message,
    )


class History:
    """SQL access for the audit log; every method runs in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except SQLAlchemyError as exc:
            raise HistoryUnavailable(f"metadata database error: {exc.__class__.__name__}: {exc}") from exc

    # -- write side: pending before the store commit, committed after it ---------------------
    def _pending(self, change_id: str, actor: str, message: str, changes: Sequence[Change]) -> None:
        now = datetime.now(UTC)
        rows = [
            {
                "change_id": change_id,
                "revision": None,
                "state": "pending",
                "at": now,
                "actor": actor,
                "kind": c.kind,
                "name": c.name,
                "action": c.action,
                "before": c.before,
                "after": c.after,
                "message": message,
            }
            for c in changes
        ]
        # Core statements: the ORM's unit of work costs about 1 ms a write here for nothing we use.
        with self._engine.begin() as conn:
            conn.execute(insert(AuditEntry), rows)

    async def record_pending(self, change_id: str, *, actor: str, message: str, changes: Sequence[Change]) -> None:
        await self._run(self._pending, change_id, actor, message, changes)

    def _finalize(self, change_id: str, revision: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(AuditEntry).where(AuditEntry.change_id == change_id).values(revision=revision, state="committed"))

    async def finalize(self, change_id: str, revision: int) -> None:
        await self._run(self._finalize, change_id, revision)

    def _discard(self, change_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(AuditEntry).where(AuditEntry.change_id == change_id))

    async def discard(self, change_id: str) -> None:
        await self._run(self._discard, change_id)

    def _pending_sets(self, before: datetime) -> dict[str, list[Change]]:
        with Session(self._engine) as s:
            rows = s.scalars(select(AuditEntry).where(AuditEntry.state == "pending", AuditEntry.at < before)).all()
            out: dict[str, list[Change]] = {}
            for r in rows:
                out.setdefault(r.change_id, []).append(Change(r.kind, r.name, r.action, r.before, r.after))  # type: ignore[arg-type]
            return out

    async def pending_sets(self, *, before: datetime) -> dict[str, list[Change]]:
        """Change sets still pending that were recorded before ``before``."""
        result: dict[str, list[Change]] = await self._run(self._pending_sets, before)
        return result

    # -- read side ----------------------------------------------------------------------------
    def _history(self, kind: str | None, name: str | None, limit: int, before: int | None) -> list[Record]:
        q = select(AuditEntry).where(AuditEntry.state == "committed")
        if kind:
            q = q.where(AuditEntry.kind == kind)
        if name:
            q = q.where(AuditEntry.name == name)
        if before is not None:
            q = q.where(AuditEntry.revision < before)
        q = q.order_by(AuditEntry.revision.desc(), AuditEntry.id).limit(limit)
        with Session(self._engine) as s:
            return [_record(r) for r in s.scalars(q).all()]

    async def history(
        self, *, kind: str | None = None, name: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[Record]:
        result: list[Record] = await self._run(self._history, kind, name, limit, before)
        return result

    def _state_at(self, revision: int) -> dict[ObjectKey, dict[str, Any]]:
        last = (
            select(AuditEntry.kind, AuditEntry.name, func.max(AuditEntry.revision).label("rev"))
            .where(AuditEntry.state == "committed", AuditEntry.revision <= revision)
            .group_by(AuditEntry.kind, AuditEntry.name)
            .subquery()
        )
        q = select(AuditEntry).join(
            last,
            (AuditEntry.kind == last.c.kind) & (AuditEntry.name == last.c.name) & (AuditEntry.revision == last.c.rev),
        )
        with Session(self._engine) as s:
            return {(r.kind, r.name): r.after for r in s.scalars(q).all() if r.after is not None}

    async def state_at(self, revision: int) -> dict[ObjectKey, dict[str, Any]]:
        """Every object's content as it was right after ``revision`` (from the audit log)."""
        result: dict[ObjectKey, dict[str, Any]] = await self._run(self._state_at, revision)
        return result

    def _latest(self) -> int:
        with Session(self._engine) as s:
            return s.scalar(select(func.max(AuditEntry.revision)).where(AuditEntry.state == "committed")) or 0

    async def latest_revision(self) -> int:
        result: int = await self._run(self._latest)
        return result
