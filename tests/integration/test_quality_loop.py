"""The quality posterior on real etcd and SQL (SQLite and PostgreSQL): outcomes and scores folded
exactly once with forgetting, the floor, publication to the routers fenced by the monitor's lead,
the floor's decisions in the audit log, and the guardrail that turns the strategy off."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from controlplane.db.engine import make_engine, migrate
from controlplane.db.models import Feedback
from controlplane.services.config import ConfigService
from controlplane.services.history import History
from controlplane.services.monitor import OutcomeStore
from controlplane.services.quality import QualityBook, QualityLoop
from controlplane.store.errors import LeadershipLost
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.informer import Informer
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from controlplane.store.view import ConfigView
from schemas.monitor import OutcomeRecord
from schemas.quality import RouteQuality
from schemas.registry import parse_object
from schemas.route import Route
from tests.fixtures.services import EtcdServer
from tests.helpers import model_doc, route_doc

pytestmark = pytest.mark.etcd
T0 = 1_800_000_000.0
_ids = itertools.count(1)


@pytest.fixture
def engine(sql_url: str) -> Iterator[Engine]:
    eng = make_engine(sql_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
async def plane(
    etcd_server: EtcdServer, engine: Engine, keys: KeySpace
) -> AsyncIterator[tuple[EtcdStore, ConfigService, ConfigView]]:  # fmt: skip
    store = EtcdStore(EtcdConfig(endpoints=(etcd_server.url,)))
    view = ConfigView(keys)
    informer = Informer(store, keys.config_prefix())
    informer.add_handler(view.on_snapshot)
    task = asyncio.create_task(informer.run())
    await informer.wait_synced(5)
    config = ConfigService(store, History(engine), keys=keys, view=view)
    quality = {"half_life_s": 100, "floor": 0.4, "min_samples": 10,
               "guardrails": {"max_error_rate": 0.5, "min_samples": 20, "window_s": 600}}  # fmt: skip
    docs = [model_doc("a"), model_doc("b"), route_doc("q", "a", "b", strategy="quality", quality=quality)]
    await config.apply([parse_object(d) for d in docs], actor="setup")
    for _ in range(50):
        if view.get("routes", "q", Route) is not None:
            break
        await asyncio.sleep(0.05)
    yield store, config, view
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await store.close()


def record(at: float, *, chosen: str | None = "a", model: str | None = None, status: str = "ok", cls: str | None = "code/short",
           signals: tuple[str, ...] = (), route: str = "q") -> tuple[str, OutcomeRecord]:  # fmt: skip
    n = next(_ids)
    rec = OutcomeRecord.model_validate({
        "key": f"k{n}", "at": at, "id": f"r{n}", "route": route, "model": model or chosen or "a", "node": "n1", "status": status,
        "decision_us": 5, "ttft_ms": 1, "total_ms": 10, "attempts": 1, "signals": list(signals), "cls": cls, "chosen": chosen,
        "why": "thompson",
    })  # fmt: skip
    return f"{int(at * 1000)}-{n}", rec


def test_outcomes_fold_as_successes_and_failures_of_the_chosen_model_with_forgetting(
    engine: Engine, plane: tuple[Any, Any, ConfigView]
) -> None:  # fmt: skip
    book = QualityBook(engine, plane[2])
    outcomes = OutcomeStore(engine, quality=book)
    batch = [record(T0) for _ in range(8)]
    batch += [record(T0, model="b"), record(T0, status="error"), record(T0, signals=("refusal",)), record(T0, status="cancelled")]
    batch += [record(T0, signals=("truncated",)), record(T0, route="other")]  # truncated is no failure; no quality route
    assert outcomes.apply(batch) == len(batch)
    assert outcomes.apply(batch) == 0  # delivered again: counted once
    spec = plane[2].get("routes", "q", Route).spec.quality  # type: ignore[union-attr]
    arm = book.posterior("q", spec, now=T0).classes[0].models[0]
    assert (arm.model, arm.evidence.successes, arm.evidence.failures) == ("a", 9, 3)
    later = book.posterior("q", spec, now=T0 + 100).classes[0].models[0]  # one half-life on
    assert later.evidence.successes == pytest.approx(4.5) and later.evidence.failures == pytest.approx(1.5)
    outcomes.apply([record(T0 + 200, status="error")])
    arm = book.posterior("q", spec, now=T0 + 200).classes[0].models[0]
    assert arm.evidence.successes == pytest.approx(9 / 4) and arm.evidence.failures == pytest.approx(3 / 4 + 1)
    assert book.prune("q", spec, now=T0 + 200 + 29 * 100) == 0  # 29 half-lives on: it still weighs something
    assert book.prune("q", spec, now=T0 + 200 + 31 * 100) == 1  # 31: forgotten, the row goes
    assert book.posterior("q", spec, now=T0 + 4000).classes == []


def test_scores_fold_once_by_the_answers_class(engine: Engine, plane: tuple[Any, Any, ConfigView]) -> None:
    book = QualityBook(engine, plane[2])
    outcomes = OutcomeStore(engine, quality=book)
    answers = [record(T0, chosen="b", cls="chat/short") for _ in range(3)]
    outcomes.apply(answers)
    with Session(engine) as session, session.begin():
        for (_, rec), score in zip(answers, (0.9, 0.7, None), strict=True):
            thumbs = None if score is not None else "down"
            session.add(Feedback(request_id=rec.id, at=T0, model="b", node="n1", route="q", variant="", score=score,
                                 thumbs=thumbs, labels=["judge"], comment="judge: ok"))  # fmt: skip
    assert book.fold_feedback() == 3
    assert book.fold_feedback() == 0
    spec = plane[2].get("routes", "q", Route).spec.quality  # type: ignore[union-attr]
    arm = book.posterior("q", spec, now=T0).classes[0].models[0]
    assert arm.model == "b" and arm.evidence.scores == 3 and arm.evidence.score_sum == pytest.approx(1.6)


async def test_the_leader_publishes_audits_the_floor_and_stops_on_a_breach(
    engine: Engine, plane: tuple[EtcdStore, ConfigService, ConfigView], keys: KeySpace
) -> None:  # fmt: skip
    store, config, view = plane
    book = QualityBook(engine, view)
    outcomes = OutcomeStore(engine, quality=book)
    history = History(engine)
    now = [T0]
    loop = QualityLoop(book, config, store, keys, history=history, clock=lambda: now[0])
    leader = Election(store, keys.election("monitor"), "one", ttl_s=5)
    assert await leader.campaign_once()
    outcomes.apply([record(T0) for _ in range(12)])
    outcomes.apply([record(T0, chosen="b", cls="chat/short", status="error") for _ in range(12)])
    outcomes.apply([record(T0, chosen="b", cls="code/short") for _ in range(12)])
    await loop.tick(leader)
    held = await store.get(keys.quality("q"))
    assert held is not None
    published = RouteQuality.model_validate_json(held.value)
    excluded = {(c.name, m.model) for c in published.classes for m in c.models if m.excluded}
    assert excluded == {("chat/short", "b")}  # all 12 failed: mean below the floor of 0.4
    events = await history.history(kind="quality", name=None, limit=10, before=None, epoch=None)
    assert [e.name for e in events] == ["q/chat/short/b"] and "no longer chosen for chat/short" in events[0].message
    successor = QualityLoop(book, config, store, keys, history=history, clock=lambda: now[0])  # as a new leader starts
    outcomes.apply([record(T0, chosen="b", cls="code/short")])
    await successor.tick(leader)
    again = await history.history(kind="quality", name=None, limit=10, before=None, epoch=None)
    assert len(again) == 1  # the exclusion it found published is not audited twice
    # answers the static weights served (no class: the strategy off) never count for its guardrails
    outcomes.apply([record(T0 + 1, status="error", cls=None, chosen=None) for _ in range(60)])
    await loop.tick(leader)
    # 12 errors of 36 answers stay under the guardrail's 50%; 30 more errors breach it
    assert view.get("routes", "q", Route).spec.quality.enabled  # type: ignore[union-attr]
    published_at = (await store.get(keys.quality("q"))).mod_revision  # type: ignore[union-attr]
    await loop.tick(leader)
    assert (await store.get(keys.quality("q"))).mod_revision == published_at  # type: ignore[union-attr]  # no news
    outcomes.apply([record(T0 + 1, status="error") for _ in range(30)])
    now[0] = T0 + 2
    await loop.tick(leader)
    assert (await store.get(keys.quality("q"))).mod_revision > published_at  # type: ignore[union-attr]
    for _ in range(50):
        route = view.get("routes", "q", Route)
        if route is not None and not route.spec.quality.enabled:
            break
        await asyncio.sleep(0.05)
    assert route is not None and not route.spec.quality.enabled
    changed = await history.history(kind="routes", name="q", limit=1, before=None, epoch=None)
    assert changed[0].actor == "monitor" and "quality guardrail: error rate" in changed[0].message
    assert "back to its static weights" in changed[0].message
    # another leads: the old leader's tick writes nothing
    await store.revoke_lease(leader.keeper.lease_id)  # type: ignore[union-attr]
    other = Election(store, keys.election("monitor"), "two", ttl_s=5)
    assert await other.campaign_once()
    before = await store.current_revision()
    await loop.tick(leader)  # nothing new to publish: nothing written, not even tried
    outcomes.apply([record(T0 + 3)])
    with pytest.raises(LeadershipLost):
        await loop.tick(leader)
    assert await store.current_revision() == before
