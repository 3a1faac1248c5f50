"""The one write path for desired configuration: validate → atomic CAS write → audit row.

Every change set is checked as a whole (schemas, then cross-object references over the state it
would produce) before anything is written, committed as one store transaction (one revision) that
moves the config head key only if it is still the head the validation saw, and recorded in the SQL
audit log: a pending row before the commit, finalized with the revision after it, discarded if the
commit fails. Each commit is also guarded by the store epoch (``controlplane.store.epoch``), whose
id the audit row records; while the epoch is ``behind`` (the store lost its history) only
``restore`` writes, and it sets the epoch ``ok`` in the same transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_chain, wait_none, wait_random

from controlplane.db.artifacts import ArtifactStore
from controlplane.services.diff import compare, unified
from controlplane.services.errors import (
    AlreadyExists,
    BadRequest,
    Busy,
    Invalid,
    NotFound,
    StaleRevision,
    StoreBehind,
    TooLarge,
    Unprocessable,
)
from controlplane.services.history import EVENT_KINDS, LEGACY, Change, History, Record
from controlplane.store import epoch as epochs
from controlplane.store.base import Check, ConfigStore, Delete, Op, Put
from controlplane.store.errors import Conflict, LeadershipLost
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Fence
from controlplane.store.view import ConfigView, InvalidObject, Stored, StoredInvalid, addressable, decode_at
from schemas.common import ConfigObject
from schemas.model import Model
from schemas.placement import matches
from schemas.registry import KINDS, parse_object
from schemas.validation import Problem, affected_by, check_references

log = logging.getLogger(__name__)
ObjectKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: int  # the new revision, or the current one for a dry run / no-op
    changes: list[Change]
    dry_run: bool
    #: Objects of the change set the store already held as given, at their revisions.
    unchanged: Mapping[ObjectKey, int] = field(default_factory=dict)

    def revision_of(self, key: ObjectKey) -> int:
        """The revision the store holds ``key`` at after this change (the change's own, if it wrote it)."""
        return self.unchanged.get(key, self.revision)

    @property
    def diff(self) -> str:
        """The unified diff, rendered on demand (it costs more than the write itself)."""
        return unified(self.changes)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Which objects a listing shows: names containing ``name_contains`` (any case), labels that
    match ``selector``; at most ``limit``, after the object ``after`` (kind, name)."""

    limit: int | None = None
    after: tuple[str, str] | None = None
    name_contains: str | None = None
    selector: Mapping[str, str] = field(default_factory=dict)

    def shows(self, name: str, labels: Mapping[str, str] | None) -> bool:
        """``labels`` None: an item whose labels cannot be read (it shows only without a selector)."""
        if self.name_contains and self.name_contains.lower() not in name.lower():
            return False
        if not self.selector:
            return True
        return labels is not None and matches(self.selector, labels)


@dataclass(frozen=True, slots=True)
class Listing:
    docs: list[dict[str, Any]]
    invalid: list[InvalidObject]
    revision: int
    total: int  # valid objects that match, on every page
    after: tuple[str, str] | None  # the last object of this page when more follow


@dataclass(frozen=True, slots=True)
class StateRead:
    objects: Mapping[ObjectKey, Stored]  # what the store holds and validates
    invalid: Mapping[str, InvalidObject]  # what the store holds and does not validate, by key
    revision: int  # revision the objects were read at
    head: int  # mod revision of the config head key when read (0: absent)


class _Proposed(Mapping[ObjectKey, ConfigObject]):
    """The state a change would produce, as an overlay on the stored one (copying 10,000 objects
    per write cost ~8 ms here; validation only looks a few of them up)."""

    def __init__(
        self, base: Mapping[ObjectKey, Stored], written: Mapping[ObjectKey, ConfigObject], deleted: set[ObjectKey]
    ) -> None:
        self._base, self._written, self._deleted = base, written, deleted

    def __getitem__(self, key: ObjectKey) -> ConfigObject:
        if key in self._deleted:
            raise KeyError(key)
        return self._written[key] if key in self._written else self._base[key].obj

    def __iter__(self) -> Iterator[ObjectKey]:
        yield from self._written
        yield from (k for k in self._base if k not in self._deleted and k not in self._written)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _StaleState(Exception):
    """The state a change was validated against moved before the commit; validate again."""


@dataclass(frozen=True, slots=True)
class _Plan:
    changes: list[Change]
    written: dict[ObjectKey, ConfigObject]
    unchanged: dict[ObjectKey, int]


def _plan(
    objects: Sequence[ConfigObject],
    deletes: Sequence[ObjectKey],
    state: Mapping[ObjectKey, Stored],
    invalid: Mapping[ObjectKey, InvalidObject],
) -> _Plan:
    """The changes a change set makes to what the store holds (unchanged objects dropped).

    An object stored invalid is compared as what it is, the stored document: writing a valid
    object over it is always a change, guarded by the invalid item's own revision.
    """
    changes: list[Change] = []
    written: dict[ObjectKey, ConfigObject] = {}
    unchanged: dict[ObjectKey, int] = {}
    gone = set(deletes)
    for obj in objects:
        key = (type(obj).plural, obj.name)
        if key in gone:
            raise BadRequest(f"{key[0]}/{key[1]} is both written and deleted")
        after, bad, old = obj.content(), invalid.get(key), state.get(key)
        if bad is not None:
            changes.append(Change(key[0], key[1], "update", bad.document, after, bad.revision))
            written[key] = obj
        elif old is None or old.obj.content() != after:
            before = old.obj.content() if old else None
            changes.append(Change(key[0], key[1], "update" if old else "create", before, after, old.revision if old else None))
            written[key] = obj
        else:
            unchanged[key] = old.revision
    for k in deletes:
        bad = invalid.get(k)
        changes.append(Change(k[0], k[1], "delete", bad.document, None, bad.revision) if bad is not None
                       else Change(k[0], k[1], "delete", state[k].obj.content(), None, state[k].revision))  # fmt: skip
    changes.sort(key=lambda c: (c.kind, c.name))
    return _Plan(changes, written, unchanged)


def _blame_deletion(p: Problem) -> Problem:
    """Word a dangling reference from the side of the person deleting the referenced object."""
    assert p.missing is not None
    kind, name = p.missing
    text = f"uses {kind}/{name}, which this change deletes; change or delete {p.kind}/{p.name} first"
    return Problem(p.kind, p.name, p.field, text, p.missing)


def _blame_invalid(p: Problem, bad: InvalidObject) -> Problem:
    """Word a reference to an object the store holds but that does not validate."""
    text = (f"uses {bad.kind}/{bad.name}, which the store holds at revision {bad.revision} but does not validate "
            f"({bad.error}); write a valid {bad.kind}/{bad.name} or delete it first")  # fmt: skip
    return Problem(p.kind, p.name, p.field, text, p.missing)


def _word(p: Problem, deleted: set[ObjectKey], invalid: Mapping[ObjectKey, InvalidObject]) -> Problem:
    """A reference problem worded for what the referenced object is: deleted, stored invalid, or missing."""
    if p.missing in deleted:
        return _blame_deletion(p)
    bad = invalid.get(p.missing) if p.missing is not None else None
    return _blame_invalid(p, bad) if bad is not None else p


def _source(last: tuple[str, int, Any] | None) -> str:
    """Where a restore's state comes from, for people."""
    return "the audit log has no committed change" if last is None else f"epoch {last[0] or '(legacy)'} revision {last[1]}"


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
    WRITE_WAIT_S = 30.0  # longest a write waits for this replica's earlier writes before it answers busy

    def __init__(
        self, store: ConfigStore, history: History, *, keys: KeySpace, view: ConfigView | None = None, max_txn_ops: int = 128,
        artifacts: ArtifactStore | None = None, view_held: Callable[[], str | None] = lambda: None,
        max_delete_share: float = 0.5,
    ) -> None:  # fmt: skip
        """``artifacts``: when given, adapter files a Model lists must be kept there. ``view_held``:
        why the view's informer keeps an old snapshot (then writes validate on a fresh listing)."""
        self._view_held = view_held
        self._max_delete_share = max_delete_share
        self._seen_epoch = False  # once the store had an epoch, its absence means it lost its data
        self._store = store
        self._artifacts = artifacts
        self._max_txn_ops = max_txn_ops
        self._history = history
        self._keys = keys
        self._view = view
        # This replica's writes take turns: each moves the configuration head, so writes of one
        # process running at once would only make each other retry (and fail after ATTEMPTS);
        # other replicas' writes still meet the head's compare-and-set and are retried.
        self._writing = asyncio.Lock()

    # -- reads -------------------------------------------------------------------------------
    async def _listed_state(self) -> tuple[dict[ObjectKey, Stored], dict[str, InvalidObject], int]:
        listed = await self._store.list(self._keys.config_prefix())
        out: dict[ObjectKey, Stored] = {}
        invalid: dict[str, InvalidObject] = {}
        for kv in listed.items:
            try:
                out[self._keys.parse_config(kv.key)] = Stored(decode_at(self._keys, kv), kv.mod_revision, kv.value)
            except StoredInvalid as exc:
                invalid[kv.key] = exc.item
        return out, invalid, listed.revision

    async def state(self, *, fresh: bool = False) -> StateRead:
        """The whole desired configuration, and the config head it is at least as new as.

        Every change set moves the head key, so a view that has reached the head's revision holds
        every committed change up to it, and a commit guarded by "head unchanged" is safe.
        ``fresh`` lists from the store instead of using the view.
        """
        head = await self._head()
        fresh = fresh or self._view_held() is not None
        if self._view is not None and not fresh and await self._view.wait_for(max(head, 1), 1.0):
            return StateRead(self._view.current, self._view.invalid, self._view.revision, head)
        objects, invalid, revision = await self._listed_state()
        return StateRead(objects, invalid, revision, head)

    async def _head(self) -> int:
        kv = await self._store.get(self._keys.config_head())
        return kv.mod_revision if kv else 0

    async def get(self, kind: str, name: str) -> ConfigObject:
        require_kind(kind)
        kv = await self._store.get(self._keys.config(kind, name))
        if kv is None:
            raise NotFound(kind, name)
        return decode_at(self._keys, kv)  # StoredInvalid when the stored bytes do not validate

    async def stored_revision(self, kind: str, name: str) -> int:
        """The revision the store holds ``kind/name`` at, valid or not; NotFound when absent."""
        require_kind(kind)
        kv = await self._store.get(self._keys.config(kind, name))
        if kv is None:
            raise NotFound(kind, name)
        return kv.mod_revision

    async def list_documents(self, kind: str | None = None, query: ListQuery | None = None) -> Listing:
        """A page of stored documents (with ``metadata.revision``) of one kind or all, sorted by
        kind then name, that match ``query``; the stored items that do not validate (on the first
        page); and the revision read at.

        Valid documents are served as stored. Only bytes the view has not judged are validated:
        re-validating 10,000 objects per listing cost ~1.5 s here (orjson: the stdlib json module
        alone took ~0.3 s).
        """
        query = query or ListQuery()
        if kind is not None:
            require_kind(kind)
        listed = await self._store.list(self._keys.config_prefix(kind))
        start = self._keys.config(*query.after) if query.after is not None else None
        docs: list[dict[str, Any]] = []
        invalid: list[InvalidObject] = []
        total, last, more = 0, None, False
        filtering, paging = bool(query.name_contains or query.selector), query.limit is not None or start is not None
        for kv in listed.items:
            verdict = self._view.known(kv) if self._view is not None else None
            if verdict is None:
                try:
                    decode_at(self._keys, kv)
                except StoredInvalid as exc:
                    verdict = exc.item
            if isinstance(verdict, InvalidObject):
                if start is None and query.shows(verdict.name, None):
                    invalid.append(verdict)
                continue
            doc = orjson.loads(kv.value)
            if filtering and not query.shows(doc["metadata"]["name"], doc["metadata"].get("labels") or {}):
                continue
            total += 1
            if paging:
                if start is not None and kv.key <= start:
                    continue
                if query.limit is not None and len(docs) >= query.limit:
                    more = True
                    continue
            doc["metadata"]["revision"] = kv.mod_revision
            docs.append(doc)
            last = kv.key
        after = self._keys.split_config(last) if more and last is not None else None
        return Listing(docs, invalid, listed.revision, total, after)

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
        restoring: epochs.Epoch | None = None,
        force: bool = False,
        fence: Fence | None = None,
    ) -> ApplyResult:
        """Create/update ``objects`` and delete ``deletes`` as one revision. A change set that
        deletes several objects and every one there is, or more than ``max_delete_share`` of them,
        needs ``force``. ``fence``: a leader's fencing token; the change commits only while it
        leads (LeadershipLost otherwise, and nothing is written).

        ``expected`` maps objects to the revision the caller last saw (0: must not exist).
        Validation runs against the state as of the config head H, and the commit moves the head
        only if it is still H; if another change set came first, validation runs again on the state
        at the new head (a few attempts, with jitter, before the caller gets a conflict).
        """
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.ATTEMPTS),
            retry=retry_if_exception_type(_StaleState),
            # The first retry runs at once (the state moved under us); later ones spread writers out.
            wait=wait_chain(wait_none(), wait_random(0, 0.02)),
            reraise=True,
        )
        try:
            async with asyncio.timeout(self.WRITE_WAIT_S):
                await self._writing.acquire()
        except TimeoutError:
            raise Busy(f"this control plane has had writes waiting for over {self.WRITE_WAIT_S:g} s; retry it") from None
        try:
            async for round_ in retrying:
                with round_:
                    return await self._apply_once(
                        objects, deletes, expected or {}, actor=actor, message=message, dry_run=dry_run, restoring=restoring,
                        force=force, fence=fence,
                    )  # fmt: skip
        except _StaleState as exc:
            raise Busy(f"the configuration changed under this write {self.ATTEMPTS} times in a row; retry it") from exc
        finally:
            self._writing.release()
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
        restoring: epochs.Epoch | None = None,
        force: bool = False,
        fence: Fence | None = None,
    ) -> ApplyResult:
        epoch = await self.epoch()
        if restoring is None and epoch is not None and epoch.state == "behind":
            raise StoreBehind(
                f"the store is behind the audit log ({epoch.reason or 'it lost its history'}): nothing is written until it is "
                "restored (llmctl restore, POST /api/v1/restore) or accepted as it is (llmctl restore --accept-current)"
            )
        if restoring is None and epoch is None and self._seen_epoch:
            raise StoreBehind("the store has lost its epoch (wiped?): the control plane is checking it; retry in a few seconds")
        read = await self.state(fresh=restoring is not None)
        state = read.objects
        involved = {*deletes, *expected, *((type(o).plural, o.name) for o in objects)}
        invalid = {k: bad for k, bad in addressable(self._keys, read.invalid).items() if k in involved}
        delete_set = set(deletes)
        stored = len(state) + len(invalid)
        if not (force or restoring or dry_run) and len(delete_set) >= 2 and (
            len(delete_set) >= stored or len(delete_set) > self._max_delete_share * stored
        ):
            share = "every object" if len(delete_set) >= stored else f"more than {self._max_delete_share:.0%} of the objects"
            raise Unprocessable(
                f"this change set deletes {len(delete_set)} of {stored} objects ({share}): check it with a dry run, "
                "then send it again with force: true (llmctl --force)",
                [{"field": "force", "message": "required for a change set that deletes this much"}],
            )
        for key in deletes:
            require_kind(key[0])
            if key not in state and key not in invalid:
                raise NotFound(*key)
        for key, exp in expected.items():
            actual = state[key].revision if key in state else invalid[key].revision if key in invalid else 0
            if exp != actual:
                raise StaleRevision(*key, expected=exp, actual=actual or None)
        plan = _plan(objects, deletes, state, invalid)
        changes, written = plan.changes, plan.written
        new_state = _Proposed(state, written, delete_set)
        # Referrers of a deleted invalid object are not held to it: its references cannot be
        # trusted, and deleting it must stay possible.
        problems = check_references(new_state, only=affected_by(new_state, written, delete_set - set(invalid)))
        problems += await self._missing_artifacts(written.values())
        if problems:
            raise Invalid([_word(p, delete_set, addressable(self._keys, read.invalid)) for p in problems])
        if dry_run or not changes:
            if restoring is not None and not dry_run:  # the store already holds it all: only the epoch is made whole
                await self._mark_whole(restoring)
            return ApplyResult(read.revision, changes, dry_run, plan.unchanged)
        ops = self._ops(changes, written, read)
        if restoring is not None:  # the store is whole again in the same revision as the restored objects
            ops.append(Put(self._keys.epoch(), restoring.with_state("ok").encode(), expected_revision=restoring.revision))
        else:  # the epoch the audit row names is the one the commit lands in
            ops.append(Check(self._keys.epoch(), epoch.revision if epoch is not None else 0))
        if fence is not None:  # first: a leader that lost its place is told so, not sent to retry
            ops.insert(0, fence.check())
        guards = sum(op.expected_revision is not None for op in ops)
        if max(guards, len(changes)) > self._max_txn_ops:
            raise TooLarge(
                f"this change set touches {len(changes)} objects and needs {guards} preconditions; one etcd transaction "
                f"allows {self._max_txn_ops} (etcd's --max-txn-ops): split it into smaller applies"
            )
        pinned = {self._keys.config(*k) for k in expected}
        epoch_id = restoring.id if restoring is not None else epoch.id if epoch is not None else LEGACY
        revision = await self._commit(ops, changes, actor=actor, message=message, pinned=pinned, epoch=epoch_id, fence=fence)
        return ApplyResult(revision, changes, False, plan.unchanged)

    async def epoch(self) -> epochs.Epoch | None:
        """The store's epoch as stored now (None: it has none)."""
        found = epochs.decode(await self._store.get(self._keys.epoch()))
        self._seen_epoch = self._seen_epoch or found is not None
        return found

    async def _missing_artifacts(self, objects: Iterable[ConfigObject]) -> list[Problem]:
        """Adapter files that Models name by digest and the control plane does not keep."""
        if self._artifacts is None:
            return []
        wanted = [
            (obj.name, f"spec.adapters[{i}].files.{file}", digest)
            for obj in objects if isinstance(obj, Model)
            for i, adapter in enumerate(obj.spec.adapters) for file, digest in adapter.files.items()
        ]  # fmt: skip
        if not wanted:
            return []
        kept = await asyncio.to_thread(self._artifacts.kept, {d for _, _, d in wanted})
        return [
            Problem("models", name, field, f"artifact {digest} is not kept by the control plane: name files a fine-tuning "
                    "job stored, or give the adapter's path on the nodes")
            for name, field, digest in wanted if digest not in kept
        ]  # fmt: skip

    def _ops(self, changes: Sequence[Change], written: Mapping[ObjectKey, ConfigObject], read: StateRead) -> list[Op]:
        ops: list[Op] = []
        for c in changes:
            path = self._keys.config(c.kind, c.name)
            if c.after is None:
                ops.append(Delete(path, expected_revision=c.before_revision))
            else:
                ops.append(Put(path, encode(written[(c.kind, c.name)]), expected_revision=c.before_revision or 0))
        # Every change set moves the head, so "head unchanged since the read" means nothing the
        # validation looked at (referenced objects, referrers of deleted ones) changed meanwhile.
        marker = json.dumps({"objects": len(changes)}).encode()
        ops.append(Put(self._keys.config_head(), marker, expected_revision=read.head))
        return ops

    async def _commit(
        self, ops: Sequence[Op], changes: Sequence[Change], *, actor: str, message: str, pinned: set[str], epoch: str = LEGACY,
        fence: Fence | None = None,
    ) -> int:  # fmt: skip
        """``pinned``: keys whose expected revision came from the caller (a conflict there is final)."""
        change_id = str(uuid.uuid4())
        await self._history.record_pending(change_id, actor=actor, message=message, changes=changes, epoch=epoch)
        try:
            revision = await self._store.commit(ops)
        except Conflict as exc:
            await self._history.discard(change_id)
            if fence is not None and exc.key == fence.key:
                raise LeadershipLost(f"{actor}: no longer the leader ({fence.key} moved); nothing was written") from exc
            if exc.key in pinned:
                kind, name = self._keys.parse_config(exc.key)
                raise StaleRevision(kind, name, expected=exc.expected, actual=exc.actual) from exc
            raise _StaleState from exc  # moved after our read, not against the caller's precondition
        except Exception:
            await self._history.discard(change_id)
            raise
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

    # -- history, diff, rollback, restore ----------------------------------------------------
    async def _epoch_of(self, epoch: str | None) -> str:
        """The epoch a user's revision refers to: the one named, else the store's current one."""
        if epoch is not None:
            return epoch
        current = await self.epoch()
        return current.id if current is not None else LEGACY

    async def history(
        self, *, kind: str | None = None, name: str | None = None, limit: int = 50, before: int | None = None,
        epoch: str | None = None, all_epochs: bool = False,
    ) -> list[Record]:  # fmt: skip
        """Committed changes, newest first, of the current epoch (or the one named, or all); kind
        ``scaling``: the autoscaler's decisions."""
        if kind is not None and kind not in EVENT_KINDS:
            require_kind(kind)
        scope = None if all_epochs else await self._epoch_of(epoch)
        return await self._history.history(kind=kind, name=name, limit=limit, before=before, epoch=scope)

    async def diff(
        self, from_revision: int, to_revision: int | None = None, *, epoch: str | None = None
    ) -> tuple[list[Change], str]:
        if from_revision < 0 or (to_revision is not None and to_revision < from_revision):
            raise BadRequest("the diff needs 0 <= from <= to")
        scope = await self._epoch_of(epoch)
        before = await self._history.state_at(from_revision, scope)
        if to_revision is None:
            after = {k: s.obj.content() for k, s in (await self.state()).objects.items()}
        else:
            after = await self._history.state_at(to_revision, scope)
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
        epoch: str | None = None,
        force: bool = False,
    ) -> ApplyResult:
        """Make the configuration (or one object) what it was right after ``revision`` (of the
        current epoch, or the one named), as a new revision."""
        scope = await self._epoch_of(epoch)
        first, latest = await self._history.revision_span(scope)
        if not first or not first <= revision <= latest:
            named = f"epoch {scope}" if scope else "the history before store epochs"
            span = f"{first}..{latest}" if first else "none"
            raise Unprocessable(
                f"revision {revision} is outside the recorded history of {named} ({span})",
                [{"field": "revision", "message": f"must be within {span}"}],
            )
        if (kind is None) != (name is None):
            raise BadRequest("roll back one object with both kind and name, or the whole configuration with neither")
        target = await self._history.state_at(revision, scope)
        text = message or f"rollback to revision {revision}" + (f" of epoch {scope}" if epoch else "")
        scope_keys = [(kind, name)] if kind and name else None
        return await self._make(target, scope_keys, actor=actor, message=text, dry_run=dry_run, force=force)

    async def _make(
        self, target: Mapping[ObjectKey, dict[str, Any]], scope: list[ObjectKey] | None, *, actor: str, message: str,
        dry_run: bool, restoring: epochs.Epoch | None = None, force: bool = False,
    ) -> ApplyResult:  # fmt: skip
        """Make the stored configuration (or the objects of ``scope``) equal ``target``, as one revision."""
        read = await self.state(fresh=restoring is not None)
        state_keys = set(read.objects) | set(addressable(self._keys, read.invalid))
        objects: list[ConfigObject] = []
        deletes: list[ObjectKey] = []
        for key in scope if scope is not None else sorted(set(target) | state_keys):
            content = target.get(key)
            if content is not None:
                try:
                    objects.append(parse_object(content))
                except ValidationError as exc:
                    raise Invalid([Problem(key[0], key[1], "", f"the recorded version no longer validates: {exc}")]) from exc
            elif key in state_keys:
                deletes.append(key)
        return await self.apply(
            objects, deletes=deletes, actor=actor, message=message, dry_run=dry_run, restoring=restoring, force=force
        )

    async def audit_drift(self) -> tuple[tuple[str, int, dict[ObjectKey, dict[str, Any]]] | None, list[Change], int]:
        """The audit log's last committed change set (epoch, revision, state), how the store
        differs from that state (``compare(audit, store)``), and the revision the store was read at."""
        last = await self._history.last_committed()
        read = await self.state(fresh=True)
        stored = {k: s.obj.content() for k, s in read.objects.items()}
        return last, compare(last[2] if last is not None else {}, stored), read.revision

    async def _mark_whole(self, epoch: epochs.Epoch) -> None:
        """The store epoch ``ok`` again, with no configuration change."""
        if epoch.state == "behind":
            await self._store.put(self._keys.epoch(), epoch.with_state("ok").encode(), expected_revision=epoch.revision)

    async def restore(self, *, actor: str, dry_run: bool = False, accept_current: bool = False) -> tuple[ApplyResult, str]:
        """Write the audit log's last committed state back as one new revision (or, with
        ``accept_current``, keep the store as it is) and mark the store epoch whole again; the
        result and where the state came from. Nothing else writes while the epoch is behind."""
        epoch = await self.epoch()
        if epoch is None:
            raise StoreBehind("the store has no epoch yet: the control plane creates one within seconds; retry")
        if accept_current:
            last, given_up, revision = await self.audit_drift()
            if not dry_run:
                await self._mark_whole(epoch)
            return ApplyResult(revision, given_up, dry_run), _source(last)
        last = await self._history.last_committed()
        text = f"restore from the audit log ({_source(last)})"
        target = last[2] if last is not None else {}
        return await self._make(target, None, actor=actor, message=text, dry_run=dry_run, restoring=epoch), _source(last)

    async def repair_pending(self, *, min_age_s: float = 60.0, leading: Callable[[], object] | None = None) -> int:
        """Resolve change sets left pending by a crash between the store commit and finalize.

        Only sets older than ``min_age_s`` count: a younger one may be a write in flight on this or
        another replica, which must not be discarded under it. A set whose every object matches
        the store was committed: it is finalized with the objects' revision (a set of deletions
        only, whose revision etcd no longer shows, gets the current revision, at most a few
        revisions late). Any other set never committed and is discarded. ``leading`` is called
        before each change and raises to stop (a leader that lost its place: ``Election.fence``).
        """
        repaired = 0
        cutoff = datetime.now(UTC) - timedelta(seconds=min_age_s)
        for change_id, changes in (await self._history.pending_sets(before=cutoff)).items():
            matches, revisions = True, set()
            for c in changes:
                kv = await self._store.get(self._keys.config(c.kind, c.name))
                if (kv is None) != (c.after is None) or (kv is not None and json.loads(kv.value) != c.after):
                    matches = False
                    break
                if kv is not None:
                    revisions.add(kv.mod_revision)
            if leading is not None:
                leading()
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
