"""LLM-as-judge: a sampled share of answers (the router sends their texts when
``LLMTUNE_ROUTER__JUDGE_SAMPLE`` is set) are scored by a judge model through the router, on the
configured judge route and rubric; each score is stored as feedback labelled ``judge``, so
experiments and figures read it like a person's. The work runs off the pipeline: a bounded queue
and one worker, so a slow judge never holds the outcome stream back (past the bound, answers go
unjudged and are counted)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping

import httpx
import orjson
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from controlplane.db.models import Feedback
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


class Judge:
    def __init__(self, engine: Engine, *, router_url: str, route: str, rubric: str = DEFAULT_RUBRIC,
                 client: httpx.AsyncClient | None = None, queue: int = 1000,
                 headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self._engine, self._url, self.route, self._rubric = engine, router_url.rstrip("/"), route, rubric
        self._client = client or httpx.AsyncClient(timeout=120, headers=headers)  # headers: the router key
        self._queue: asyncio.Queue[OutcomeRecord] = asyncio.Queue(maxsize=queue)
        self.judged = self.skipped = self.failed = 0

    def submit(self, records: list[OutcomeRecord]) -> None:
        """Queue the records that carry texts (never the judge's own answers)."""
        for record in records:
            if record.question is None or record.answer is None or record.route == self.route:
                continue
            try:
                self._queue.put_nowait(record)
            except asyncio.QueueFull:
                self.skipped += 1

    async def run(self) -> None:
        """Forever: judge what is queued; a failure is logged and counted, never retried."""
        while True:
            record = await self._queue.get()
            try:
                await self.judge(record)
            except Exception as exc:  # the router, the judge model or the database: logged, the next one goes on
                self.failed += 1
                log.warning("judging %s failed: %s", record.id, exc)

    async def judge(self, record: OutcomeRecord) -> float | None:
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
        resp = await self._client.post(f"{self._url}/api/chat", json=body, headers={"x-route-name": self.route})
        resp.raise_for_status()
        verdict = parse_score(ollama.text(resp.json()))
        if verdict is None:
            self.failed += 1
            log.warning("the judge's answer for %s holds no score", record.id)
            return None
        await asyncio.to_thread(self._store, record, *verdict)
        self.judged += 1
        return verdict[0]

    def _store(self, record: OutcomeRecord, score: float, reason: str) -> None:
        with Session(self._engine) as session, session.begin():
            seen = session.scalars(
                select(Feedback.id).where(Feedback.request_id == record.id, Feedback.comment.startswith("judge:"))
            ).first()
            if seen is not None:  # judged already (a record delivered twice)
                return
            session.add(Feedback(
                request_id=record.id, at=time.time(), model=record.model, node=record.node, route=record.route or "",
                variant=record.variant or "", score=score, thumbs=None, labels=["judge"], comment=f"judge: {reason}",
            ))  # fmt: skip

    async def close(self) -> None:
        await self._client.aclose()
