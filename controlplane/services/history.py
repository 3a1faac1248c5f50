"""The audit log in SQL: pending → committed change sets, per-object and global history, the
configuration state at any past revision (so diff and rollback work after etcd compaction), and
the autoscaler's decisions (``EVENT_KINDS``: listed in the history, never part of a state).

Every row names the store epoch its revision belongs to (``controlplane.store.epoch``): revisions
are compared only within one epoch, so a wiped or restored etcd, whose revisions start again,
never makes two changes share a revision. Rows older than epochs have none (``LEGACY``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from controlplane.db.models import AuditEntry
from controlplane.services.errors import HistoryUnavailable

Action = Literal["create", "update", "delete"]
ObjectKey = tuple[str, str]
#: The epoch of rows written before the store had one.
LEGACY = ""
#: Kinds of rows that record a decision, not a configuration object (the autoscaler's, the quality
#: strategy's floor): listed in the history, never part of a state, a revision span or a restore.
EVENT_KINDS = frozenset({"scaling", "quality"})


def _in(epoch: str) -> ColumnElement[bool]:
    return AuditEntry.epoch.is_(None) if epoch == LEGACY else AuditEntry.epoch == epoch


def _config() -> ColumnElement[bool]:
    return AuditEntry.kind.not_in(EVENT_KINDS)


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
    epoch: str = LEGACY


def _record(row: AuditEntry) -> Record:
    return Record(
        epoch=row.epoch or LEGACY,
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
    def _insert(
        self, change_id: str, actor: str, message: str, changes: Sequence[Change], epoch: str, revision: int | None
    ) -> None:
        """One change set's rows: pending (no revision yet) or, with ``revision``, committed."""
        now = datetime.now(UTC)
        rows = [
            {
                "change_id": change_id,
                "epoch": epoch or None,
                "revision": revision,
                "state": "pending" if revision is None else "committed",
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

    async def record_pending(
        self, change_id: str, *, actor: str, message: str, changes: Sequence[Change], epoch: str = LEGACY
    ) -> None:
        await self._run(self._insert, change_id, actor, message, changes, epoch, None)

    async def record_events(
        self, *, actor: str, message: str, changes: Sequence[Change], revision: int, epoch: str = LEGACY
    ) -> None:
        """Decisions already committed at ``revision`` (their kinds in ``EVENT_KINDS``)."""
        assert all(c.kind in EVENT_KINDS for c in changes), "only decisions are recorded after their commit"
        await self._run(self._insert, str(uuid.uuid4()), actor, message, changes, epoch, revision)

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
    def _history(self, kind: str | None, name: str | None, limit: int, before: int | None, epoch: str | None) -> list[Record]:
        q = select(AuditEntry).where(AuditEntry.state == "committed")
        if epoch is not None:
            q = q.where(_in(epoch))
        if kind:
            q = q.where(AuditEntry.kind == kind)
        if name:
            q = q.where(AuditEntry.name == name)
        if before is not None:
            q = q.where(AuditEntry.revision < before)
        # the newest first: by epoch (the newest epoch has the newest rows), then by revision
        q = q.order_by(AuditEntry.id.desc()) if epoch is None else q.order_by(AuditEntry.revision.desc(), AuditEntry.id)
        with Session(self._engine) as s:
            return [_record(r) for r in s.scalars(q.limit(limit)).all()]

    async def history(
        self, *, kind: str | None = None, name: str | None = None, limit: int = 50, before: int | None = None,
        epoch: str | None = None,
    ) -> list[Record]:  # fmt: skip
        """Committed changes, newest first: of ``epoch`` (revisions compare only within one), or of
        every epoch when None (then ``before`` is not meaningful across epochs)."""
        result: list[Record] = await self._run(self._history, kind, name, limit, before, epoch)
        return result

    def _state_at(self, revision: int, epoch: str) -> dict[ObjectKey, dict[str, Any]]:
        last = (
            select(AuditEntry.kind, AuditEntry.name, func.max(AuditEntry.revision).label("rev"))
            .where(AuditEntry.state == "committed", _in(epoch), _config(), AuditEntry.revision <= revision)
            .group_by(AuditEntry.kind, AuditEntry.name)
            .subquery()
        )
        q = (
            select(AuditEntry)
            .where(_in(epoch), _config())
            .join(
                last,
                (AuditEntry.kind == last.c.kind) & (AuditEntry.name == last.c.name) & (AuditEntry.revision == last.c.rev),
            )
        )
        with Session(self._engine) as s:
            return {(r.kind, r.name): r.after for r in s.scalars(q).all() if r.after is not None}

    async def state_at(self, revision: int, epoch: str = LEGACY) -> dict[ObjectKey, dict[str, Any]]:
        """Every object's content as it was right after ``revision`` of ``epoch`` (from the audit log)."""
        result: dict[ObjectKey, dict[str, Any]] = await self._run(self._state_at, revision, epoch)
        return result

    def _span(self, epoch: str) -> tuple[int, int]:
        q = select(func.min(AuditEntry.revision), func.max(AuditEntry.revision))
        with Session(self._engine) as s:
            first, last = s.execute(q.where(AuditEntry.state == "committed", _in(epoch), _config())).one()
        return first or 0, last or 0

    async def revision_span(self, epoch: str = LEGACY) -> tuple[int, int]:
        """The first and the last committed revision of ``epoch`` ((0, 0): none)."""
        result: tuple[int, int] = await self._run(self._span, epoch)
        return result

    async def latest_revision(self, epoch: str = LEGACY) -> int:
        """The last committed revision of ``epoch`` (0: none)."""
        return (await self.revision_span(epoch))[1]

    def _last_epoch(self) -> str | None:
        with Session(self._engine) as s:
            row = s.scalars(
                select(AuditEntry).where(AuditEntry.state == "committed", _config()).order_by(AuditEntry.id.desc()).limit(1)
            ).first()
            return None if row is None else (row.epoch or LEGACY)

    async def last_committed(self) -> tuple[str, int, dict[ObjectKey, dict[str, Any]]] | None:
        """(epoch, revision, state) of the audit log's last committed change set; None: no history."""
        epoch = await self._run(self._last_epoch)
        if epoch is None:
            return None
        revision = await self.latest_revision(epoch)
        return epoch, revision, await self.state_at(revision, epoch)

    def _adopt(self, epoch: str) -> int:
        with self._engine.begin() as conn:
            return conn.execute(update(AuditEntry).where(AuditEntry.epoch.is_(None)).values(epoch=epoch)).rowcount

    async def adopt_legacy(self, epoch: str) -> int:
        """Rows older than epochs join ``epoch`` (the store still holds what they say); how many."""
        result: int = await self._run(self._adopt, epoch)
        return result
