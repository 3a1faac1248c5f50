"""The write path against a real etcd and both SQL databases (SQLite file and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from controlplane.db.engine import make_engine, migrate
from controlplane.db.models import AuditEntry
from controlplane.services.config import ConfigService
from controlplane.services.errors import HistoryUnavailable, Invalid, NotFound, StaleRevision
from controlplane.services.history import Change, History
from controlplane.store.base import ConfigStore, Op
from controlplane.store.errors import LeadershipLost, StoreUnavailable
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from schemas.registry import parse_object
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc, rag_doc, route_doc

pytestmark = pytest.mark.etcd


@pytest.fixture
def engine(sql_url: str) -> Iterator[Engine]:
    eng = make_engine(sql_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
async def etcd_store(etcd_server: EtcdServer) -> AsyncIterator[EtcdStore]:
    store = EtcdStore(EtcdConfig(endpoints=(etcd_server.url,)))
    yield store
    await store.close()


@pytest.fixture
def service(etcd_store: EtcdStore, engine: Engine, keys: KeySpace) -> ConfigService:
    return ConfigService(etcd_store, History(engine), keys=keys)


def rows(engine: Engine) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all())


def objs(*docs: dict[str, object]) -> list:  # type: ignore[type-arg]
    return [parse_object(d) for d in docs]


async def test_apply_is_one_revision_with_audit_rows(service: ConfigService, engine: Engine) -> None:
    result = await service.apply(
        objs(model_doc("m1"), model_doc("m2"), route_doc("r", "m1", "m2")), actor="alice", message="first"
    )
    assert [c.action for c in result.changes] == ["create"] * 3
    state = (await service.state()).objects
    assert {s.revision for s in state.values()} == {result.revision}
    audit = rows(engine)
    assert {(r.kind, r.name, r.action, r.actor, r.revision, r.state, r.message) for r in audit} == {
        ("models", "m1", "create", "alice", result.revision, "committed", "first"),
        ("models", "m2", "create", "alice", result.revision, "committed", "first"),
        ("routes", "r", "create", "alice", result.revision, "committed", "first"),
    }
    assert all(r.before is None and r.after is not None for r in audit)
    # re-applying the same documents changes nothing and writes no audit row
    again = await service.apply(objs(model_doc("m1")), actor="alice")
    assert again.changes == [] and again.revision >= result.revision and len(rows(engine)) == 3


async def test_invalid_references_write_nothing(service: ConfigService, engine: Engine) -> None:
    await service.apply(objs(model_doc("chat")), actor="a")
    with pytest.raises(Invalid) as exc:
        await service.apply(objs(route_doc("r", "chat", "ghost"), rag_doc("support-kb", "chat")), actor="a")
    fields = {(p.kind, p.field) for p in exc.value.problems}
    assert fields == {("routes", "spec.targets[1].model"), ("rag", "spec.embedding_model")}
    assert "lacks the 'embed' capability" in str(exc.value)
    assert [r.name for r in rows(engine)] == ["chat"]
    with pytest.raises(NotFound):
        await service.get("routes", "r")
    # deleting a model that a route uses is refused too
    await service.apply(objs(route_doc("r", "chat")), actor="a")
    with pytest.raises(Invalid) as refused:
        await service.delete("models", "chat", actor="a")
    assert str(refused.value) == (
        "routes/r spec.targets[0].model: uses models/chat, which this change deletes; change or delete routes/r first"
    )


async def test_stale_expected_revision_is_a_conflict(service: ConfigService) -> None:
    first = await service.put(parse_object(model_doc("m")), actor="a")
    await service.put(parse_object(model_doc("m", ctx=4096)), actor="b", expected_revision=first.revision)
    with pytest.raises(StaleRevision) as exc:
        await service.put(parse_object(model_doc("m", ctx=2048)), actor="c", expected_revision=first.revision)
    assert exc.value.expected == first.revision and exc.value.actual and exc.value.actual > first.revision
    assert (await service.get("models", "m")).spec.context_window == 4096  # type: ignore[attr-defined]


async def test_history_diff_and_rollback(service: ConfigService) -> None:
    r1 = (await service.apply(objs(model_doc("a"), model_doc("b"), route_doc("r", "a")), actor="u")).revision
    r2 = (await service.apply(objs(route_doc("r", "a", "b")), actor="u", message="add b")).revision
    r3 = (await service.apply(objs(model_doc("c")), deletes=[], actor="u")).revision
    hist = await service.history(kind="routes", name="r")
    assert [(h.revision, h.action) for h in hist] == [(r2, "update"), (r1, "create")]
    changes, text = await service.diff(r1, r3)
    assert {(c.kind, c.name, c.action) for c in changes} == {("routes", "r", "update"), ("models", "c", "create")}
    assert "+  - model: b\n" in text and "+++ b/models/c\n" in text
    one = await service.rollback(r1, kind="routes", name="r", actor="u")
    assert [(c.kind, c.name, c.action) for c in one.changes] == [("routes", "r", "update")]
    assert [t.model for t in (await service.get("routes", "r")).spec.targets] == ["a"]  # type: ignore[attr-defined]
    whole = await service.rollback(r1, actor="u")
    assert [(c.kind, c.name, c.action) for c in whole.changes] == [("models", "c", "delete")]
    assert (await service.history(limit=1))[0].message == f"rollback to revision {r1}"


async def test_history_and_rollback_survive_etcd_compaction(own_etcd: EtcdServer, engine: Engine, keys: KeySpace) -> None:
    store = EtcdStore(EtcdConfig(endpoints=(own_etcd.url,)))
    service = ConfigService(store, History(engine), keys=keys)
    r1 = (await service.apply(objs(model_doc("a", ctx=1024)), actor="u")).revision
    for ctx in (2048, 4096, 8192):
        await service.put(parse_object(model_doc("a", ctx=ctx)), actor="u")
    await store.compact(await store.current_revision())
    changes, _ = await service.diff(r1)
    assert [(c.action, c.before["spec"]["context_window"], c.after["spec"]["context_window"]) for c in changes] == [  # type: ignore[index]
        ("update", 1024, 8192)
    ]
    await service.rollback(r1, kind="models", name="a", actor="u")
    assert (await service.get("models", "a")).spec.context_window == 1024  # type: ignore[attr-defined]
    await store.close()


class FailingCommit:
    """Delegates to a real store but fails every commit as an outage would."""

    def __init__(self, inner: ConfigStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def commit(self, ops: Sequence[Op]) -> int:
        raise StoreUnavailable("etcd is down")


async def test_store_outage_leaves_no_audit_row_and_no_change(etcd_store: EtcdStore, engine: Engine, keys: KeySpace) -> None:
    service = ConfigService(FailingCommit(etcd_store), History(engine), keys=keys)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        await service.apply(objs(model_doc("m")), actor="a")
    assert rows(engine) == []
    assert (await etcd_store.list(keys.config_prefix())).items == ()


async def test_database_outage_writes_nothing_to_the_store(etcd_store: EtcdStore, keys: KeySpace) -> None:
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    service = ConfigService(etcd_store, History(dead), keys=keys)
    with pytest.raises(HistoryUnavailable):
        await service.apply(objs(model_doc("m")), actor="a")
    assert (await etcd_store.list(keys.config_prefix())).items == ()


async def test_pending_change_sets_are_repaired_after_a_crash(
    service: ConfigService, engine: Engine, etcd_store: EtcdStore, keys: KeySpace
) -> None:
    # A crash after the store commit but before finalize leaves a pending set that matches the store ...
    m = parse_object(model_doc("m"))
    history = History(engine)
    await history.record_pending("c1", actor="a", message="", changes=[Change("models", "m", "create", None, m.content())])
    from controlplane.services.config import encode

    rev = await etcd_store.put(keys.config("models", "m"), encode(m))
    # ... and a crash before the commit leaves one that does not.
    await history.record_pending("c2", actor="a", message="", changes=[Change("models", "x", "create", None, {"kind": "Model"})])
    assert await service.repair_pending() == 0  # too young: could be a write in flight elsewhere
    assert await service.repair_pending(min_age_s=0) == 2
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.state == "pending")) == 0
    assert [(r.name, r.revision) for r in await service.history()] == [("m", rev)]


@pytest.fixture
async def viewed(etcd_store: EtcdStore, engine: Engine, keys: KeySpace) -> AsyncIterator[ConfigService]:
    """The service as the API runs it: validating against the informer-fed view."""
    import asyncio

    from controlplane.store.informer import Informer
    from controlplane.store.view import ConfigView

    view = ConfigView(keys)
    informer = Informer(etcd_store, keys.config_prefix())
    informer.add_handler(view.on_snapshot)
    task = asyncio.create_task(informer.run())
    await informer.wait_synced(5)
    yield ConfigService(etcd_store, History(engine), keys=keys, view=view)
    task.cancel()


async def test_racing_delete_and_new_reference_never_both_commit(viewed: ConfigService, engine: Engine) -> None:
    import asyncio

    for round_ in range(5):
        name = f"m{round_}"
        await viewed.apply(objs(model_doc(name)), actor="setup")
        results = await asyncio.gather(
            viewed.delete("models", name, actor="deleter"),
            viewed.apply(objs(route_doc(f"r{round_}", name)), actor="router"),
            return_exceptions=True,
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        assert len(ok) == 1, results  # one wins; the other is refused (422) instead of dangling
        assert all(isinstance(r, Invalid | NotFound) for r in results if isinstance(r, BaseException))
        state = (await viewed.state(fresh=True)).objects
        from schemas.validation import check_references

        assert check_references({k: s.obj for k, s in state.items()}) == []


async def test_concurrent_writers_on_different_objects_all_commit(viewed: ConfigService, engine: Engine) -> None:
    import asyncio

    # this replica's writers take turns (none is sent back busy for having raced the others)
    await asyncio.gather(*(viewed.apply(objs(model_doc(f"w{i}")), actor=f"u{i}") for i in range(40)))
    state = (await viewed.state(fresh=True)).objects
    assert {k[1] for k in state} == {f"w{i}" for i in range(40)}
    assert len({r.revision for r in rows(engine)}) == 40  # forty separate revisions, all audited


async def test_concurrent_if_match_writers_one_wins(viewed: ConfigService) -> None:
    import asyncio

    first = await viewed.put(parse_object(model_doc("hot")), actor="a")
    results = await asyncio.gather(
        *(
            viewed.put(parse_object(model_doc("hot", ctx=1024 + i)), actor=f"u{i}", expected_revision=first.revision)
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, StaleRevision) for r in results if isinstance(r, BaseException))


async def test_a_fenced_write_lands_only_while_its_leader_leads(
    service: ConfigService, etcd_store: EtcdStore, engine: Engine, keys: KeySpace
) -> None:
    """The monitor's and the autoscaler's writes carry their leader's fencing token: once another
    candidate leads, a write from the old leader is refused whole, and the audit log keeps no row."""
    old = Election(etcd_store, keys.election("monitor"), "old", ttl_s=5)
    assert await old.campaign_once()
    await service.apply(objs(model_doc("m1")), actor="monitor", fence=old.fence())
    fence = old.fence()
    await etcd_store.revoke_lease(old.keeper.lease_id)  # paused past its lease, then replaced
    new = Election(etcd_store, keys.election("monitor"), "new", ttl_s=5)
    assert await new.campaign_once()
    before = len(rows(engine))
    with pytest.raises(LeadershipLost, match="no longer the leader"):
        await service.apply(objs(model_doc("m2")), actor="monitor", fence=fence)
    assert len(rows(engine)) == before and await etcd_store.get(keys.config("models", "m2")) is None
    await service.apply(objs(model_doc("m2")), actor="monitor", fence=new.fence())
    assert await etcd_store.get(keys.config("models", "m2")) is not None
    await new.resign()


async def test_a_write_landing_during_the_recovery_check_is_not_taken_for_a_store_gone_back(
    etcd_store: EtcdStore, engine: Engine, keys: KeySpace
) -> None:
    """Another replica's (or this one's) change set committed and audited while the check reads:
    the check must not find the store behind the audit log (it would stop every write)."""
    from controlplane.services.recovery import Recovery

    history = History(engine)
    service = ConfigService(etcd_store, history, keys=keys)
    recovery = Recovery(etcd_store, history, service, keys=keys)
    made = await recovery.check()  # the epoch is made
    assert made.state == "ok" and made.epoch
    await service.apply(objs(model_doc("before")), actor="a")
    real = history.latest_revision
    written = []

    async def write_meanwhile(epoch: str) -> int:
        if not written:  # a write lands between the check's reads
            written.append(await service.apply(objs(model_doc(f"during{len(written)}")), actor="b"))
        return await real(epoch)

    history.latest_revision = write_meanwhile  # type: ignore[method-assign]
    report = await recovery.check()
    assert written and report.state == "ok" and report.epoch == made.epoch, report  # no new epoch, no "behind"
    assert (await service.apply(objs(model_doc("after")), actor="c")).revision > 0  # writes go on
