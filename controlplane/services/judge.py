"""LLM-as-judge: a sampled share of answers (the router sends their texts when
``LLMTUNE_ROUTER__JUDGE_SAMPLE`` is set) are scored by a judge model through the router, on the
configured judge route and rubric; each score is stored as feedback labelled ``judge``, so
experiments and figures read it like a person's. The work runs off the pipeline: answers are
queued in SQL with the fold of their outcomes (bounded: past the bound they go unjudged and are
counted) and one worker on the monitor's leader judges them, so a slow judge never holds the
outcome stream back and a failover neither drops nor repeats a judgement."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable

import orjson
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from controlplane.db.models import Feedback, JudgeQueued
from controlplane.store.errors import LeadershipLost
from rag.router_client import RouterClient, RouterError
from schemas import ollama
from schemas.monitor import OutcomeRecord

log = logging.getLogger(__name__)

DEFAULT_RUBRIC = (
    "You grade an assistant's answer to a user's question. Judge whether it is correct, relevant and "
    'complete. Reply with a JSON object only: {"score": a number from 0 (useless) to 1 (excellent), '
    '"reason": "one short sentence"}.'
)
_NUMBER = re.compile(r'"score"\s*:\s*([0-9]*\.?[0-9]+)')


def parse_score(text: str) -> tuple[float, str] | None:
    """The judge's score (clamped to [0, 1]; a 1-10 scale is divided down) and reason, or None."""
    reason = ""
    try:
        data = orjson.loads(text)
        score = float(data["score"]) if isinstance(data, dict) else None
        reason = str(data.get("reason", ""))[:500] if isinstance(data, dict) else ""
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        found = _NUMBER.search(text)
        score = float(found.group(1)) if found else None
    if score is None:
        return None
    if score > 1:
        score = score / 10 if score <= 10 else 1.0
    return max(0.0, min(1.0, score)), reason


def queue_for_judging(session: Session, records: Iterable[OutcomeRecord], *, route: str, limit: int) -> int:
    """In the fold's transaction: queue the records that carry texts (never the judge's own answers)
    while the queue holds fewer than ``limit``; how many were left out for the bound."""
    wanted = [r for r in records if r.question is not None and r.answer is not None and r.route != route]
    if not wanted:
        return 0
    held = session.scalar(select(func.count()).select_from(JudgeQueued)) or 0
    ids = {r.id for r in wanted}
    known = set(session.scalars(select(JudgeQueued.request_id).where(JudgeQueued.request_id.in_(ids))))
    room, left_out = max(0, limit - held), 0
    for record in wanted:
        if record.id in known:
            continue
        if room <= 0:
            left_out += 1
            continue
        known.add(record.id)
        session.add(JudgeQueued(request_id=record.id, at=record.at, record=record.model_dump_json()))
        room -= 1
    return left_out


class JudgeUnavailable(Exception):
    """The router cannot judge now (unreachable, failing, refusing the key or too busy)."""


class Judge:
    """Judges the queued answers (``judge_queue``), oldest first, while this replica leads the
    monitor (``leading`` raises otherwise); each score is stored in the transaction that takes its
    answer off the queue, so a judgement is neither repeated nor lost when the lead moves."""

    def __init__(self, engine: Engine, router: RouterClient, *, route: str, rubric: str = DEFAULT_RUBRIC,
                 poll_s: float = 0.5, retry_s: float = 5.0) -> None:  # fmt: skip
        self._engine, self._router, self.route, self._rubric = engine, router, route, rubric
        self._poll_s, self._retry_s = poll_s, retry_s
        self.judged = self.failed = 0

    async def run(self, leading: Callable[[], object]) -> None:
        """Forever: judge what is queued while leading. An answer the router refuses (4xx) or whose
        judgement holds no score is logged, counted and not retried; while the router is away,
        failing (5xx), refusing the key or too busy, answers stay queued and are tried again."""
        while True:
            try:
                leading()
                done = await self.run_once(leading)
            except LeadershipLost:
                done = 0
            except JudgeUnavailable:
                await asyncio.sleep(self._retry_s)  # the queue keeps its answers until the router is back
                continue
            except Exception as exc:  # the database: logged, tried again
                log.warning("the judge's queue could not be read: %s", exc)
                done = 0
            if not done:
                await asyncio.sleep(self._poll_s)

    async def run_once(self, leading: Callable[[], object] = lambda: None, *, batch: int = 16) -> int:
        """Judge up to ``batch`` queued answers; how many were taken off the queue."""
        queued = await asyncio.to_thread(self._oldest, batch)
        for request_id, raw in queued:
            leading()  # a replica that lost the lead leaves the rest to the next leader
            record = OutcomeRecord.model_validate_json(raw)
            try:
                verdict = await self._score(record)
            except RouterError as exc:
                if exc.status is None or exc.status >= 500 or exc.status in (401, 403, 408, 429):
                    # the router (or its key) is unavailable for now: the answer stays queued for later
                    log.warning("judging %s waits: %s", request_id, exc)
                    raise JudgeUnavailable(str(exc)) from exc
                log.warning("judging %s failed: %s", request_id, exc)  # refused for this answer: not retried
                verdict = None
            except Exception as exc:  # the judge model's answer: logged, the next one goes on
                log.warning("judging %s failed: %s", request_id, exc)
                verdict = None
            leading()
            if await asyncio.to_thread(self._settle, record, verdict):
                if verdict is None:
                    self.failed += 1
                else:
                    self.judged += 1
        return len(queued)

    async def judge(self, record: OutcomeRecord) -> float | None:
        """Score one answer now and store it (not through the queue)."""
        verdict = await self._score(record)
        if verdict is None:
            self.failed += 1
            return None
        await asyncio.to_thread(self._settle, record, verdict, queued=False)
        self.judged += 1
        return verdict[0]

    async def _score(self, record: OutcomeRecord) -> tuple[float, str] | None:
        body = {
            "model": "judge",  # the pinned route decides the model
            "messages": [
                {"role": "system", "content": self._rubric},
                {"role": "user", "content": f"Question:\n{record.question}\n\nAnswer:\n{record.answer}"},
            ],
            "format": "json",
            "stream": False,
            "options": {"temperature": 0},
        }
        resp = await self._router.post("/api/chat", body, timeout_s=120, headers={"x-route-name": self.route})
        verdict = parse_score(ollama.text(resp.json()))
        if verdict is None:
            log.warning("the judge's answer for %s holds no score", record.id)
        return verdict

    def _oldest(self, batch: int) -> list[tuple[str, str]]:
        with Session(self._engine) as session:
            rows = session.execute(select(JudgeQueued.request_id, JudgeQueued.record).order_by(JudgeQueued.at).limit(batch))
            return [(r[0], r[1]) for r in rows]

    def _settle(self, record: OutcomeRecord, verdict: tuple[float, str] | None, *, queued: bool = True) -> bool:
        """Take the answer off the queue and store its score, in one transaction; False when it was
        off the queue already (another judge settled it)."""
        with Session(self._engine) as session, session.begin():
            if queued:
                taken = session.execute(delete(JudgeQueued).where(JudgeQueued.request_id == record.id))
                if not taken.rowcount:  # type: ignore[attr-defined]
                    return False
            seen = session.scalars(
                select(Feedback.id).where(Feedback.request_id == record.id, Feedback.comment.startswith("judge:"))
            ).first()
            if verdict is None or seen is not None:  # no score, or judged already (a record delivered twice)
                return True
            score, reason = verdict
            session.add(Feedback(
                request_id=record.id, at=time.time(), model=record.model, node=record.node, route=record.route or "",
                variant=record.variant or "", score=score, thumbs=None, labels=["judge"], comment=f"judge: {reason}",
            ))  # fmt: skip
        return True
