"""The quality posterior per (route, request class, model): folded from the monitor's outcome
records (success or failure of the model the ``quality`` strategy chose first) and from scores
(the LLM judge's, people's feedback), with exponential forgetting (each route's
``quality.half_life_s``); read back decayed to now for the API and for the routers.

``QualityLoop`` runs on the monitor's leader every few seconds: folds new feedback, publishes each
quality route's posterior to ``/<ns>/v1/quality/<route>`` (fenced), writes the floor's exclusions
to the audit log, and turns the strategy off (``quality.enabled: false``, a fenced configuration
write) when the route's answers breach its guardrails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from controlplane.db.models import Feedback, MonitorOffset, OutcomeSample, QualityStat
from controlplane.services.config import ConfigService
from controlplane.services.errors import HistoryUnavailable, NotFound, StaleRevision
from controlplane.services.figures import percentile
from controlplane.services.history import LEGACY, Change, History
from controlplane.store.base import ConfigStore, Delete, Op, Put
from controlplane.store.keys import KeySpace
from controlplane.store.leases import Election
from controlplane.store.view import ConfigView
from schemas.monitor import OutcomeRecord
from schemas.quality import FAILING_SIGNALS, ClassQuality, Evidence, ModelQuality, RouteQuality, RouteQualityReport
from schemas.route import QualitySpec, Route, Strategy

log = logging.getLogger(__name__)

FEEDBACK_OFFSET = "quality:feedback"  # the monitor_offsets row of the last feedback folded in
ACTOR = "monitor"
#: Classes published per route at most (those with the most evidence): a route split by tenant
#: must not grow its object past what the store takes (etcd: 1.5 MiB a value).
MAX_CLASSES = 400
#: A route whose evidence did not move is published again only this often (the decay goes on).
REPUBLISH_S = 60.0
#: Evidence this many half-lives old weighs under 1e-9: its rows are deleted.
FORGOTTEN_HALF_LIVES = 30
Arm = tuple[str, str, str]  # route, class, model


def _decayed(row: QualityStat, at: float, half_life_s: float) -> float:
    """Bring ``row`` forward to ``at`` (its evidence halves every ``half_life_s``); the weight of an
    observation made at ``at`` (below 1 for one older than the row's time)."""
    if at >= row.at:
        factor = 0.5 ** ((at - row.at) / half_life_s)
        row.successes, row.failures, row.scores = row.successes * factor, row.failures * factor, row.scores * factor
        row.score_sum, row.score_sq, row.at = row.score_sum * factor, row.score_sq * factor, at
        return 1.0
    return float(0.5 ** ((row.at - at) / half_life_s))


def evidence_at(row: QualityStat, now: float, half_life_s: float) -> Evidence:
    factor = 0.5 ** (max(0.0, now - row.at) / half_life_s)
    return Evidence(successes=row.successes * factor, failures=row.failures * factor, scores=row.scores * factor,
                    score_sum=row.score_sum * factor, score_sq=row.score_sq * factor)  # fmt: skip


class QualityBook:
    """The SQL side: folds evidence in the caller's transaction (outcomes) or its own (feedback),
    and reports a route's posterior decayed to a moment."""

    def __init__(self, engine: Engine, view: ConfigView) -> None:
        self._engine, self._view = engine, view

    def spec(self, route: str) -> QualitySpec | None:
        """The quality settings of ``route`` when it uses the strategy."""
        found = self._view.get("routes", route, Route)
        return found.spec.quality if found is not None and found.spec.strategy is Strategy.QUALITY else None

    def quality_routes(self) -> list[Route]:
        found = (self._view.get(kind, name, Route) for kind, name in self._view.state if kind == "routes")
        return sorted((r for r in found if r is not None and r.spec.strategy is Strategy.QUALITY), key=lambda r: r.name)

    @staticmethod
    def _row(session: Session, rows: dict[Arm, QualityStat], arm: Arm, at: float) -> QualityStat:
        row = rows.get(arm)
        if row is None:
            row = session.get(QualityStat, arm, with_for_update=True)
            if row is None:
                row = QualityStat(route=arm[0], cls=arm[1], model=arm[2], successes=0.0, failures=0.0, scores=0.0,
                                  score_sum=0.0, score_sq=0.0, at=at)  # fmt: skip
                session.add(row)
            rows[arm] = row
        return row

    def fold_outcomes(self, session: Session, records: Iterable[OutcomeRecord]) -> int:
        """In the fold's transaction: each answer of a quality route counts for the model its strategy
        chose first: a success, or a failure (an error, a fallback's answer, a failing signal)."""
        rows: dict[Arm, QualityStat] = {}
        folded = 0
        for rec in sorted((r for r in records if r.cls and r.chosen and r.route), key=lambda r: r.at):
            spec = self.spec(rec.route or "")
            if spec is None or rec.status == "cancelled":  # a client that left says nothing of the model
                continue
            row = self._row(session, rows, (rec.route or "", rec.cls or "", rec.chosen or ""), rec.at)
            weight = _decayed(row, rec.at, spec.half_life_s)
            if rec.status == "ok" and rec.model == rec.chosen and not FAILING_SIGNALS.intersection(rec.signals):
                row.successes += weight
            else:
                row.failures += weight
            folded += 1
        return folded

    def fold_feedback(self, *, batch: int = 1000) -> int:
        """Scores (the judge's, people's) on answers of quality routes, newer than the last folded; how many."""
        with Session(self._engine) as session, session.begin():
            offset = session.get(MonitorOffset, FEEDBACK_OFFSET, with_for_update=True)
            last = int(offset.last_id) if offset else 0
            found = session.execute(
                select(Feedback.id, Feedback.at, Feedback.route, Feedback.model, Feedback.score, Feedback.thumbs,
                       OutcomeSample.cls)
                .join(OutcomeSample, OutcomeSample.request_id == Feedback.request_id, isouter=True)
                .where(Feedback.id > last).order_by(Feedback.id).limit(batch)
            ).all()  # fmt: skip
            if not found:
                return 0
            rows: dict[Arm, QualityStat] = {}
            folded = 0
            for _, at, route, model, score, thumbs, cls in found:
                spec = self.spec(route)
                value = score if score is not None else 1.0 if thumbs == "up" else 0.0 if thumbs == "down" else None
                if spec is None or not cls or value is None:
                    continue
                row = self._row(session, rows, (route, cls, model), at)
                weight = _decayed(row, at, spec.half_life_s)
                row.scores += weight
                row.score_sum += weight * value
                row.score_sq += weight * value * value
                folded += 1
            newest = max(f[0] for f in found)
            if offset is None:
                session.add(MonitorOffset(stream=FEEDBACK_OFFSET, last_id=str(newest), applied=folded))
            else:
                offset.last_id, offset.applied = str(newest), offset.applied + folded
            return folded

    def posterior(self, route: str, spec: QualitySpec, *, now: float) -> RouteQuality:
        """The route's evidence decayed to ``now``, per class and model, with the floor applied."""
        with Session(self._engine) as session:
            rows = session.scalars(select(QualityStat).where(QualityStat.route == route)).all()
            by_class: dict[str, list[tuple[str, Evidence]]] = {}
            for row in rows:
                by_class.setdefault(row.cls, []).append((row.model, evidence_at(row, now, spec.half_life_s)))
        if len(by_class) > MAX_CLASSES:
            kept = sorted(by_class, key=lambda c: -sum(e.answers + e.scores for _, e in by_class[c]))[:MAX_CLASSES]
            by_class = {c: by_class[c] for c in kept}
        classes = []
        for cls, arms in sorted(by_class.items()):
            total = sum(e.answers for _, e in arms) or 1.0
            models = []
            for model, ev in sorted(arms):
                mean = ev.mean()
                low, high = ev.interval(seed=zlib.crc32(f"{route}/{cls}/{model}".encode()))
                below = spec.floor is not None and ev.answers >= spec.min_samples and mean < spec.floor
                models.append(ModelQuality(model=model, evidence=ev, mean=round(mean, 4), low=round(low, 4), high=round(high, 4),
                                           share=round(ev.answers / total, 4), excluded=below))  # fmt: skip
            classes.append(ClassQuality(name=cls, models=models))
        return RouteQuality(route=route, updated_at=now, classes=classes)

    def stamp(self, route: str) -> tuple[object, ...]:
        """Changes whenever evidence of ``route`` is folded in (rows, their newest time, their sums)."""
        with Session(self._engine) as session:
            weight = QualityStat.successes + QualityStat.failures + QualityStat.scores
            found = session.execute(
                select(func.count(), func.max(QualityStat.at), func.sum(weight)).where(QualityStat.route == route)
            ).one()
        return tuple(found)

    def prune(self, route: str, spec: QualitySpec, *, now: float) -> int:
        """Delete the evidence of ``route`` that no longer weighs anything (a class or tenant gone quiet)."""
        cutoff = now - FORGOTTEN_HALF_LIVES * spec.half_life_s
        with Session(self._engine) as session, session.begin():
            done = session.execute(delete(QualityStat).where(QualityStat.route == route, QualityStat.at < cutoff))
            return int(done.rowcount or 0)  # type: ignore[attr-defined]

    def report(self, route: str, *, now: float | None = None, published_at: float | None = None) -> RouteQualityReport:
        found = self._view.get("routes", route, Route)
        if found is None:
            raise NotFound("routes", route)
        spec = found.spec.quality
        posterior = self.posterior(route, spec, now=now or time.time())
        return RouteQualityReport(**posterior.model_dump(), strategy=found.spec.strategy.value, enabled=spec.enabled,
                                  floor=spec.floor, published_at=published_at)  # fmt: skip

    def breaches(self, route: str, spec: QualitySpec, *, now: float) -> list[str]:
        """The guardrails the route's recent answers decided by the strategy breach (empty: none, or
        too few answers). Only answers with a class count: those from before an operator turned the
        strategy back on (static weights) do not turn it off again."""
        rails = spec.guardrails
        with Session(self._engine) as session:
            found = session.execute(
                select(OutcomeSample.status, OutcomeSample.total_ms).where(
                    OutcomeSample.route == route, OutcomeSample.at >= now - rails.window_s, OutcomeSample.status != "cancelled",
                    OutcomeSample.cls.is_not(None))
            ).all()  # fmt: skip
        if len(found) < rails.min_samples:
            return []
        out = []
        failed = sum(1 for status, _ in found if status != "ok")
        if rails.max_error_rate is not None and failed / len(found) > rails.max_error_rate:
            out.append(f"error rate {failed / len(found):.1%} > {rails.max_error_rate:.1%}")
        p95 = percentile(sorted(ms for _, ms in found), 95)
        if rails.max_p95_latency_ms is not None and p95 is not None and p95 > rails.max_p95_latency_ms:
            out.append(f"p95 latency {p95:.0f} ms > {rails.max_p95_latency_ms} ms")
        return [f"{b} over the last {rails.window_s} s ({len(found)} answers)" for b in out]


class QualityCollector(Collector):
    """The posteriors the leading monitor last published (nothing on a replica that does not lead)."""

    def __init__(self, loop: QualityLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterable[GaugeMetricFamily]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["route", "class", "model"])

        mean = gauge("llmtune_quality_mean", "Expected answer quality (success rate x mean score), 0 to 1.")
        share = gauge("llmtune_quality_share", "A model's share of its class's recent answers (decayed).")
        answers = gauge("llmtune_quality_answers", "Evidence: answers (decayed) behind the posterior.")
        below = gauge("llmtune_quality_excluded", "1 while the route's floor keeps the model from the class.")
        for route, q in sorted(self._loop.posteriors.items()):
            for c in q.classes:
                for m in c.models:
                    key = [route, c.name, m.model]
                    mean.add_metric(key, m.mean)
                    share.add_metric(key, m.share)
                    answers.add_metric(key, m.evidence.answers)
                    below.add_metric(key, 1.0 if m.excluded else 0.0)
        return [mean, share, answers, below]


def _excluded(raw: bytes | None) -> frozenset[tuple[str, str]]:
    """The (class, model) pairs a stored publication kept out (none when unreadable)."""
    try:
        published = RouteQuality.model_validate_json(raw) if raw else None
    except ValidationError:
        return frozenset()
    return frozenset((c.name, m.model) for c in published.classes for m in c.models if m.excluded) if published else frozenset()


@dataclass
class Published:
    at: float
    excluded: frozenset[tuple[str, str]]  # (class, model)
    stamp: tuple[object, ...] = ()


class QualityLoop:
    """The leader's step (``tick``, every few seconds): fold feedback, guard, publish, audit."""

    def __init__(
        self, book: QualityBook, config: ConfigService, store: ConfigStore, keys: KeySpace, *, history: History | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.book, self._config, self._store, self._keys, self._history = book, config, store, keys, history
        self._clock = clock
        self.published: dict[str, Published] = {}
        self.posteriors: dict[str, RouteQuality] = {}  # as last published (the metrics)

    async def tick(self, election: Election) -> None:
        election.fence()
        await asyncio.to_thread(self.book.fold_feedback)
        now = self._clock()
        routes = self.book.quality_routes()
        for route in routes:
            if route.spec.quality.enabled:
                await self._guard(route, election, now=now)
        held = await self._store.list(self._keys.quality_prefix())
        present = {kv.key.rsplit("/", 1)[-1] for kv in held.items}
        posteriors, stamps = [], {}
        for r in routes:
            stamps[r.name] = stamp = await asyncio.to_thread(self.book.stamp, r.name)
            last = self.published.get(r.name)
            if last is not None and last.stamp == stamp and now - last.at < REPUBLISH_S and r.name in present:
                continue  # nothing new since its last publication
            if last is None or now - last.at >= REPUBLISH_S:
                await asyncio.to_thread(self.book.prune, r.name, r.spec.quality, now=now)
            posteriors.append((r.name, await asyncio.to_thread(self.book.posterior, r.name, r.spec.quality, now=now)))
        names = {r.name for r in routes}
        ops: list[Op] = [Put(self._keys.quality(name), q.model_dump_json().encode()) for name, q in posteriors]
        ops += [Delete(kv.key) for kv in held.items if kv.key.rsplit("/", 1)[-1] not in names]
        for gone in set(self.published) - names:
            del self.published[gone]
            self.posteriors.pop(gone, None)
        if not ops:
            return
        revision = await election.commit(ops)
        events = []
        stored = {kv.key.rsplit("/", 1)[-1]: kv.value for kv in held.items}
        for name, q in posteriors:
            excluded = frozenset((c.name, m.model) for c in q.classes for m in c.models if m.excluded)
            before = self.published.get(name)
            was = before.excluded if before is not None else _excluded(stored.get(name))  # a new leader: the last one's
            if was != excluded:
                events += self._floor_events(name, q, excluded, was)
            self.published[name] = Published(now, excluded, stamps[name])
            self.posteriors[name] = q
        await self._audit(events, revision)

    @staticmethod
    def _floor_events(route: str, q: RouteQuality, now: frozenset[tuple[str, str]],
                      before: frozenset[tuple[str, str]]) -> list[tuple[str, Change]]:  # fmt: skip
        means = {(c.name, m.model): m for c in q.classes for m in c.models}
        out = []
        for cls, model in sorted(now - before):
            m = means[(cls, model)]
            why = f"{model} is no longer chosen for {cls} on route {route}: mean quality {m.mean:.3f} is below the floor"
            out.append((why, Change("quality", f"{route}/{cls}/{model}", "create", None, {"excluded": True, "mean": m.mean,
                                                                                           "answers": m.evidence.answers})))
        for cls, model in sorted(before - now):
            back = means.get((cls, model))
            why = f"{model} may be chosen again for {cls} on route {route}" + (f" (mean quality {back.mean:.3f})" if back else "")
            out.append((why, Change("quality", f"{route}/{cls}/{model}", "delete", {"excluded": True}, None)))
        return out

    async def _audit(self, events: list[tuple[str, Change]], revision: int) -> None:
        if self._history is None or not events:
            return
        epoch = await self._config.epoch()
        for message, change in events:
            log.info("quality floor: %s", message)
            try:
                await self._history.record_events(actor=ACTOR, message=message, changes=[change], revision=revision,
                                                  epoch=epoch.id if epoch else LEGACY)  # fmt: skip
            except HistoryUnavailable as exc:
                log.warning("quality floor decision not in the audit log: %s", exc)

    async def _guard(self, route: Route, election: Election, *, now: float) -> None:
        breached = await asyncio.to_thread(self.book.breaches, route.name, route.spec.quality, now=now)
        if not breached:
            return
        why = f"quality guardrail: {'; '.join(breached)}; route {route.name} is back to its static weights"
        quality = route.spec.quality.model_copy(update={"enabled": False})
        off = route.model_copy(update={"spec": route.spec.model_copy(update={"quality": quality})})
        with contextlib.suppress(StaleRevision):  # changed meanwhile: the next tick sees it
            await self._config.apply([off], expected={("routes", route.name): route.metadata.revision or 0}, actor=ACTOR,
                                     message=why, fence=election.fence())  # fmt: skip
            log.warning(why)

