"""The one write path for desired configuration: validate → atomic CAS write → audit row.

Every change set is checked as a whole (schemas, then cross-object references over the state it
would produce) before anything is written, committed as one store transaction (one revision) that
also guards the objects it references, and recorded in the SQL audit log: a pending row before the
commit, finalized with the revision after it, discarded if the commit fails.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from controlplane.services.diff import compare, unified
from controlplane.services.errors import AlreadyExists, BadRequest, Invalid, NotFound, StaleRevision, TooLarge
from controlplane.services.history import Change, History, Record
from controlplane.services.view import ConfigView, Stored, decode
from controlplane.store.base import Check, ConfigStore, Delete, Op, PrefixCheck, Put
from controlplane.store.errors import Conflict
from controlplane.store.keys import KeySpace
from schemas.common import ConfigObject
from schemas.registry import KINDS, parse_object
from schemas.validation import Problem, affected_by, check_references, references

log = logging.getLogger(__name__)
ObjectKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: int  # the new revision, or the current one for a dry run / no-op
    changes: list[Change]
    dry_run: bool

    @property
    def diff(self) -> str:
        """The unified diff, rendered on demand (it costs more than the write itself)."""
        return unified(self.changes)


class _StaleState(Exception):
    """The state a change was validated against moved before the commit; validate again."""


def encode(obj: ConfigObject) -> bytes:
    return json.dumps(obj.content(), separators=(",", ":"), sort_keys=True).encode()


def require_kind(kind: str) -> type[ConfigObject]:
    cls = KINDS.get(kind)
    if cls is None:
        raise NotFound(kind)
    return cls


class ConfigService:
    """Reads go to the store; writes validate against the view (or a fresh listing) and commit
    with guards that make that validation hold at the commit's revision."""

    #: Attempts when concurrent writers move the configuration between validation and commit.
    ATTEMPTS = 8

    def __init__(
        self, store: ConfigStore, history: History, *, keys: KeySpace, view: ConfigView | None = None, max_txn_ops: int = 128
    ) -> None:
        self._store = store
        self._max_txn_ops = max_txn_ops
        self._history = history
        self._keys = keys
        self._view = view
        self._last_commit = 0

    # -- reads -------------------------------------------------------------------------------
    async def _listed_state(self) -> tuple[Mapping[ObjectKey, Stored], int]:
        listed = await self._store.list(self._keys.config_prefix())
        out: dict[ObjectKey, Stored] = {}
        for kv in listed.items:
            try:
                out[self._keys.parse_config(kv.key)] = Stored(decode(kv.value, kv.mod_revision), kv.mod_revision)
            except (ValueError, ValidationError):
                log.error("ignoring invalid stored object %s at revision %d", kv.key, kv.mod_revision)
        return out, listed.revision

    async def state(self, *, fresh: bool = False) -> tuple[Mapping[ObjectKey, Stored], int]:
        """The whole desired configuration and its revision: from the view when it has caught up
        with this service's own last write, else listed from the store."""
        if not fresh and self._view is not None and await self._view.wait_for(self._last_commit, 1.0) and self._view.revision:
            return self._view.state, self._view.revision
        return await self._listed_state()

    async def get(self, kind: str, name: str) -> ConfigObject:
        require_kind(kind)
        kv = await self._store.get(self._keys.config(kind, name))
        if kv is None:
            raise NotFound(kind, name)
        return decode(kv.value, kv.mod_revision)

    async def list_kind(self, kind: str) -> tuple[list[ConfigObject], int]:
        require_kind(kind)
        listed = await self._store.list(self._keys.config_prefix(kind))
        return [decode(kv.value, kv.mod_revision) for kv in listed.items], listed.revision

    # -- the write path ----------------------------------------------------------------------
    async def apply(
        self,
        objects: Sequence[ConfigObject] = (),
        *,
        deletes: Sequence[ObjectKey] = (),
        expected: Mapping[ObjectKey, int] | None = None,
        actor: str,
        message: str = "",
        dry_run: bool = False,
    ) -> ApplyResult:
        """Create/update ``objects`` and delete ``deletes`` as one revision.

        ``expected`` maps objects to the revision the caller last saw (0: must not exist).
        Validation runs against a state read at some revision R, and the commit carries guards
        that nothing under the config prefix changed after R; if something did, validation runs
        again on a fresh listing (a few attempts, with jitter, before the caller gets a conflict).
        """
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.ATTEMPTS),
            retry=retry_if_exception_type(_StaleState),
            wait=wait_random(0, 0.02),
            reraise=True,
        )
        attempt = 0
        async for round_ in retrying:
            with round_:
                attempt += 1
                return await self._apply_once(
                    objects, deletes, expected or {}, actor=actor, message=message, dry_run=dry_run, fresh=attempt > 1
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _apply_once(
        self,
        objects: Sequence[ConfigObject],
        deletes: Sequence[ObjectKey],
        expected: Mapping[ObjectKey, int],
        *,
        actor: str,
        message: str,
        dry_run: bool,
        fresh: bool,
    ) -> ApplyResult:
        state, revision = await self.state(fresh=fresh)
        delete_set = set(deletes)
        for key in deletes:
            require_kind(key[0])
            if key not in state:
                raise NotFound(*key)
        for key, exp in expected.items():
            actual = state[key].revision if key in state else 0
            if exp != actual:
                raise StaleRevision(*key, expected=exp, actual=actual or None)
        changes: list[Change] = []
        written: dict[ObjectKey, ConfigObject] = {}
        for obj in objects:
            key = (type(obj).plural, obj.name)
            if key in delete_set:
                raise BadRequest(f"{key[0]}/{key[1]} is both written and deleted")
            old = state.get(key)
            after = obj.content()
            before = old.obj.content() if old else None
            if before != after:
                changes.append(
                    Change(key[0], key[1], "update" if old else "create", before, after, old.revision if old else None)
                )
                written[key] = obj
        changes += [Change(k[0], k[1], "delete", state[k].obj.content(), None, state[k].revision) for k in deletes]
        changes.sort(key=lambda c: (c.kind, c.name))
        new_state: dict[ObjectKey, ConfigObject] = {k: s.obj for k, s in state.items() if k not in delete_set}
        new_state.update(written)
        problems = check_references(new_state, only=affected_by(new_state, written, delete_set))
        if problems:
            raise Invalid(problems)
        if dry_run or not changes:
            return ApplyResult(revision, changes, dry_run)
        ops = self._ops(changes, written, state, revision)
        guards = sum(op.expected_revision is not None for op in ops)
        if max(guards, len(changes)) > self._max_txn_ops:
            raise TooLarge(
                f"this change set touches {len(changes)} objects and needs {guards} preconditions; one etcd transaction "
                f"allows {self._max_txn_ops} (etcd's --max-txn-ops): split it into smaller applies"
            )
        pinned = {self._keys.config(*k) for k in expected}
        return ApplyResult(await self._commit(ops, changes, actor=actor, message=message, pinned=pinned), changes, False)

    def _ops(
        self,
        changes: Sequence[Change],
        written: Mapping[ObjectKey, ConfigObject],
        state: Mapping[ObjectKey, Stored],
        revision: int,
    ) -> list[Op]:
        ops: list[Op] = []
        changed = {(c.kind, c.name) for c in changes}
        guards: set[ObjectKey] = set()
        for c in changes:
            key = (c.kind, c.name)
            path = self._keys.config(*key)
            if c.after is None:
                ops.append(Delete(path, expected_revision=c.before_revision))
            else:
                ops.append(Put(path, encode(written[key]), expected_revision=c.before_revision or 0))
                guards.update(ref for ref in references(written[key]) if ref not in changed)
        # The objects a written object references must still be what we validated against, and
        # nothing under the prefix may have been created or changed after the state we read.
        ops += [Check(self._keys.config(*ref), state[ref].revision) for ref in sorted(guards) if ref in state]
        ops.append(PrefixCheck(self._keys.config_prefix(), revision))
        return ops

    async def _commit(self, ops: Sequence[Op], changes: Sequence[Change], *, actor: str, message: str, pinned: set[str]) -> int:
        """``pinned``: keys whose expected revision came from the caller (a conflict there is final)."""
        change_id = str(uuid.uuid4())
        await self._history.record_pending(change_id, actor=actor, message=message, changes=changes)
        try:
            revision = await self._store.commit(ops)
        except Conflict as exc:
            await self._history.discard(change_id)
            if exc.key in pinned:
                kind, name = self._keys.parse_config(exc.key)
                raise StaleRevision(kind, name, expected=exc.expected, actual=exc.actual) from exc
            raise _StaleState from exc  # moved after our read, not against the caller's precondition
        except Exception:
            await self._history.discard(change_id)
            raise
        self._last_commit = revision
        await self._history.finalize(change_id, revision)
        return revision

    async def put(
        self, obj: ConfigObject, *, actor: str, expected_revision: int | None = None, create_only: bool = False, message: str = ""
    ) -> ApplyResult:
        key = (type(obj).plural, obj.name)
        if create_only:
            expected_revision = 0
        try:
            return await self.apply(
                [obj], expected={key: expected_revision} if expected_revision is not None else None, actor=actor, message=message
            )
        except StaleRevision as exc:
            if create_only and exc.actual:
                raise AlreadyExists(*key) from exc
            raise

    async def delete(
        self, kind: str, name: str, *, actor: str, expected_revision: int | None = None, message: str = ""
    ) -> ApplyResult:
        key = (kind, name)
        return await self.apply(
            deletes=[key],
            expected={key: expected_revision} if expected_revision is not None else None,
            actor=actor,
            message=message,
        )

    # -- history, diff, rollback -------------------------------------------------------------
    async def history(
        self, *, kind: str | None = None, name: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[Record]:
        if kind is not None:
            require_kind(kind)
        return await self._history.history(kind=kind, name=name, limit=limit, before=before)

    async def diff(self, from_revision: int, to_revision: int | None = None) -> tuple[list[Change], str]:
        if from_revision < 0 or (to_revision is not None and to_revision < from_revision):
            raise BadRequest("the diff needs 0 <= from <= to")
        before = await self._history.state_at(from_revision)
        if to_revision is None:
            state, _ = await self.state()
            after = {k: s.obj.content() for k, s in state.items()}
        else:
            after = await self._history.state_at(to_revision)
        changes = compare(before, after)
        return changes, unified(changes)

    async def rollback(
        self,
        revision: int,
        *,
        kind: str | None = None,
        name: str | None = None,
        actor: str,
        message: str = "",
        dry_run: bool = False,
    ) -> ApplyResult:
        """Make the configuration (or one object) what it was right after ``revision``, as a new revision."""
        latest = await self._history.latest_revision()
        if revision < 0 or revision > latest:
            raise BadRequest(f"revision {revision} is outside the recorded history (0..{latest})")
        if (kind is None) != (name is None):
            raise BadRequest("roll back one object with both kind and name, or the whole configuration with neither")
        target = await self._history.state_at(revision)
        state, _ = await self.state()
        scope = [(kind, name)] if kind and name else sorted(set(target) | set(state))
        objects: list[ConfigObject] = []
        deletes: list[ObjectKey] = []
        for key in scope:
            content = target.get(key)
            if content is not None:
                try:
                    objects.append(parse_object(content))
                except ValidationError as exc:
                    raise Invalid(
                        [Problem(key[0], key[1], "", f"the version at revision {revision} no longer validates: {exc}")]
                    ) from exc
            elif key in state:
                deletes.append(key)
        text = message or f"rollback to revision {revision}"
        return await self.apply(objects, deletes=deletes, actor=actor, message=text, dry_run=dry_run)

    async def repair_pending(self) -> int:
        """Resolve change sets left pending by a crash between the store commit and finalize.

        A set whose every object matches the store was committed: it is finalized with the
        objects' revision (a set of deletions only, whose revision etcd no longer shows, gets
        the current revision, at most a few revisions late). Any other set never committed.
        """
        repaired = 0
        for change_id, changes in (await self._history.pending_sets()).items():
            matches, revisions = True, set()
            for c in changes:
                kv = await self._store.get(self._keys.config(c.kind, c.name))
                if (kv is None) != (c.after is None) or (kv is not None and json.loads(kv.value) != c.after):
                    matches = False
                    break
                if kv is not None:
                    revisions.add(kv.mod_revision)
            if matches and len(revisions) <= 1:
                await self._history.finalize(change_id, revisions.pop() if revisions else await self._store.current_revision())
            else:
                await self._history.discard(change_id)
            repaired += 1
        return repaired

    @staticmethod
    def parse(document: Any, *, kind: str | None = None) -> ConfigObject:
        """Validate a JSON/YAML document (raises pydantic.ValidationError)."""
        if kind is not None and isinstance(document, dict):
            cls = require_kind(kind)
            document = {"kind": cls.model_fields["kind"].default, **document}
        return parse_object(document)
