"""Feedback on answers: stored with the model, node, route and variant that gave the answer, found
by the request id in the monitor's raw samples. One per (request, submitter): a resubmission
replaces the earlier one, so no caller can weigh an answer more than once."""

from __future__ import annotations

import time

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from controlplane.db.models import Feedback, OutcomeSample
from controlplane.services.errors import UnknownRequest
from schemas.monitor import FeedbackIn, FeedbackOut


class FeedbackService:
    def __init__(self, engine: Engine, *, keep_samples_s: float) -> None:
        self._engine, self._keep_s = engine, keep_samples_s

    def submit(self, feedback: FeedbackIn, *, submitter: str) -> FeedbackOut:
        with Session(self._engine) as session, session.begin():
            sample = session.scalars(
                select(OutcomeSample).where(OutcomeSample.request_id == feedback.request_id).order_by(OutcomeSample.at.desc())
            ).first()
            if sample is None:
                raise UnknownRequest(
                    f"no answer with request id '{feedback.request_id}' was recorded: the id is unknown, older than the "
                    f"samples kept ({self._keep_s / 3600:g} h), or its outcome is not in yet (a few seconds after the answer)"
                )
            row = session.scalars(
                select(Feedback).where(Feedback.request_id == feedback.request_id, Feedback.submitter == submitter)
            ).first() or Feedback(request_id=feedback.request_id, submitter=submitter)
            row.at, row.model, row.node = time.time(), sample.model, sample.node
            row.route, row.variant = sample.route, sample.variant
            row.score, row.thumbs, row.comment = feedback.score, feedback.thumbs, feedback.comment
            row.labels = list(feedback.labels)
            session.add(row)
            session.flush()
            return FeedbackOut(
                id=row.id, request_id=row.request_id, at=row.at, model=row.model, node=row.node, route=row.route or None,
                variant=row.variant or None, score=row.score, thumbs=feedback.thumbs, labels=row.labels, comment=row.comment,
                submitter=row.submitter,
            )  # fmt: skip
