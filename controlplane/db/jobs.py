"""Fine-tuning jobs in SQL: the one place their state changes, shared by the control plane and the
workers. Every change is a compare-and-set on (state, attempt), so a worker that was declared lost
and comes back cannot overwrite a newer run, and two control planes cannot both re-queue a job."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.db.models import FineTuneDataset, FineTuneJob, FineTuneLog
from schemas.finetune import FINAL_STATES, DatasetInfo, JobState, LogLine, Method
from schemas.finetune import FineTuneJob as JobOut


@dataclass(frozen=True, slots=True)
class Beat:
    alive: bool  # the worker still owns the run
    cancel: bool  # someone asked to cancel it


def job_serialize(data: dict[str, Any]) -> bytes:
    """arq's job and result payloads as JSON. arq's default is pickle, which lets anyone who can
    write to Redis run code on the workers; a job here is only ``run_job(job_id, attempt)``."""
    return orjson.dumps(data, default=str)  # a failed run's exception is kept as its text


def job_deserialize(raw: bytes) -> dict[str, Any]:
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("an arq payload is a JSON object")
    return data


def ended_channel(queue: str) -> str:
    """Redis pub/sub channel on which workers announce the runs they ended."""
    return f"{queue}:ended"


def _when(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, UTC) if t is not None else None


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- datasets ----------------------------------------------------------------------------
    def put_dataset(self, dataset_id: str, text: str, *, rows: int) -> DatasetInfo:
        """Store rows once per content: the id is derived from their digest."""
        with Session(self._engine) as session:
            if session.scalar(select(FineTuneDataset.id).where(FineTuneDataset.id == dataset_id)) is None:
                size = len(text.encode())
                session.add(FineTuneDataset(id=dataset_id, rows=rows, bytes=size, text=text, created_at=time.time()))
                try:
                    session.commit()
                except IntegrityError:  # the same rows uploaded at the same moment
                    session.rollback()
        return self.dataset_infos([dataset_id])[dataset_id]

    def dataset_text(self, dataset_id: str) -> str | None:
        with Session(self._engine) as session:
            return session.scalar(select(FineTuneDataset.text).where(FineTuneDataset.id == dataset_id))

    def dataset_infos(self, ids: Iterable[str]) -> dict[str, DatasetInfo]:
        """Rows and bytes of datasets, without reading their text (up to megabytes each)."""
        query = select(FineTuneDataset.id, FineTuneDataset.rows, FineTuneDataset.bytes).where(FineTuneDataset.id.in_(set(ids)))
        with Session(self._engine) as session:
            return {i: DatasetInfo(id=i, rows=r, bytes=b) for i, r, b in session.execute(query)}

    # -- jobs --------------------------------------------------------------------------------
    def insert(self, job: FineTuneJob) -> bool:
        """False when a job with that id exists already, or an active job makes the same output model."""
        with Session(self._engine, expire_on_commit=False) as session:
            session.add(job)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
            return True

    def delete(self, job_id: str) -> None:
        with Session(self._engine) as session, session.begin():
            job = session.get(FineTuneJob, job_id)
            if job is not None:
                session.delete(job)

    def get(self, job_id: str) -> FineTuneJob | None:
        with Session(self._engine, expire_on_commit=False) as session:
            return session.get(FineTuneJob, job_id)

    def recent(self, *, state: JobState | None = None, limit: int = 100) -> list[FineTuneJob]:
        query = select(FineTuneJob).order_by(FineTuneJob.created_at.desc()).limit(limit)
        if state is not None:
            query = query.where(FineTuneJob.state == state.value)
        with Session(self._engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    def in_state(self, state: JobState) -> list[FineTuneJob]:
        with Session(self._engine, expire_on_commit=False) as session:
            return list(session.scalars(select(FineTuneJob).where(FineTuneJob.state == state.value)))

    def active_output(self, output_model: str) -> FineTuneJob | None:
        """A job not yet ended that will create ``output_model``."""
        finals = [s.value for s in FINAL_STATES]
        query = select(FineTuneJob).where(FineTuneJob.output_model == output_model, FineTuneJob.state.not_in(finals))
        with Session(self._engine, expire_on_commit=False) as session:
            return session.scalars(query).first()

    def _cas(self, job_id: str, when: JobState, values: dict[str, Any], *, attempt: int | None = None) -> bool:
        """Set ``values`` if the job is in state ``when`` (and at ``attempt``): True if it was."""
        query = update(FineTuneJob).where(FineTuneJob.id == job_id, FineTuneJob.state == when.value)
        if attempt is not None:
            query = query.where(FineTuneJob.attempt == attempt)
        with Session(self._engine) as session, session.begin():
            return session.execute(query.values(**values)).rowcount == 1  # type: ignore[attr-defined,no-any-return]

    # -- the worker's side -------------------------------------------------------------------
    def claim(self, job_id: str, attempt: int, worker: str) -> FineTuneJob | None:
        """queued → running for this attempt; None when the job is not (or no longer) that."""
        now = time.time()
        values = {"state": JobState.RUNNING.value, "worker": worker, "heartbeat_at": now, "started_at": now, "progress": 0.0}
        if not self._cas(job_id, JobState.QUEUED, values, attempt=attempt):
            return None
        return self.get(job_id)

    def heartbeat(
        self, job_id: str, attempt: int, *, progress: float | None = None, metrics: dict[str, Any] | None = None
    ) -> Beat:
        values: dict[str, Any] = {"heartbeat_at": time.time()}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, progress))
        if metrics is not None:
            values["metrics"] = metrics
        query = update(FineTuneJob).where(
            FineTuneJob.id == job_id, FineTuneJob.state == JobState.RUNNING.value, FineTuneJob.attempt == attempt
        )
        with Session(self._engine) as session, session.begin():
            alive = session.execute(query.values(**values)).rowcount == 1  # type: ignore[attr-defined]
            cancel = session.scalar(select(FineTuneJob.cancel_requested).where(FineTuneJob.id == job_id))
        return Beat(alive=bool(alive), cancel=bool(cancel))

    def log(self, job_id: str, attempt: int, lines: Sequence[tuple[float, str, str]]) -> None:
        if not lines:
            return
        with Session(self._engine) as session, session.begin():
            session.add_all(
                FineTuneLog(job_id=job_id, attempt=attempt, at=at, level=level, message=message) for at, level, message in lines
            )

    def finish(
        self, job_id: str, attempt: int, state: JobState, *, error: str | None = None, result: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> bool:  # fmt: skip
        """running → registering (a result to register), failed or cancelled."""
        values: dict[str, Any] = {"state": state.value, "error": error, "heartbeat_at": time.time()}
        if state is JobState.REGISTERING:
            values.update(result=result, progress=1.0)
        else:
            values["finished_at"] = time.time()
        if metrics is not None:
            values["metrics"] = metrics
        return self._cas(job_id, JobState.RUNNING, values, attempt=attempt)

    # -- the control plane's side ------------------------------------------------------------
    def request_cancel(self, job_id: str) -> FineTuneJob | None:
        """A queued job is cancelled at once; a running one is asked to stop (its worker ends it)."""
        now = time.time()
        cancelled = {"state": JobState.CANCELLED.value, "cancel_requested": True, "finished_at": now}
        if not self._cas(job_id, JobState.QUEUED, cancelled):
            self._cas(job_id, JobState.RUNNING, {"cancel_requested": True})
        return self.get(job_id)

    def lost(self, *, stale_after_s: float) -> list[FineTuneJob]:
        cutoff = time.time() - stale_after_s
        query = select(FineTuneJob).where(FineTuneJob.state == JobState.RUNNING.value, FineTuneJob.heartbeat_at < cutoff)
        with Session(self._engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    def requeue(self, job: FineTuneJob, *, max_attempts: int, why: str) -> JobState | None:
        """A lost run: queued again as the next attempt, or failed once attempts run out, or
        cancelled when that was asked. None when the job moved on meanwhile."""
        now = time.time()
        if job.cancel_requested:
            state, values = JobState.CANCELLED, {"finished_at": now, "error": why}
        elif job.attempt >= max_attempts:
            error = f"{why}; {job.attempt} of {max_attempts} attempts used"
            state, values = JobState.FAILED, {"finished_at": now, "error": error}
        else:
            state, values = JobState.QUEUED, {"attempt": job.attempt + 1, "worker": None, "progress": 0.0, "error": None}
        values["state"] = state.value
        return state if self._cas(job.id, JobState.RUNNING, values, attempt=job.attempt) else None

    def registered(self, job_id: str, *, revision: int, experiment: str | None) -> bool:
        values = {"state": JobState.SUCCEEDED.value, "model_revision": revision, "experiment": experiment}
        values["finished_at"] = time.time()
        return self._cas(job_id, JobState.REGISTERING, values)

    def registration_failed(self, job_id: str, error: str) -> bool:
        values = {"state": JobState.FAILED.value, "error": error, "finished_at": time.time()}
        return self._cas(job_id, JobState.REGISTERING, values)

    def logs(self, job_id: str, *, after: int = 0, limit: int = 1000) -> list[LogLine]:
        query = (
            select(FineTuneLog).where(FineTuneLog.job_id == job_id, FineTuneLog.id > after).order_by(FineTuneLog.id).limit(limit)
        )
        with Session(self._engine) as session:
            rows = session.scalars(query)
            return [LogLine(id=r.id, attempt=r.attempt, at=r.at, level=r.level, message=r.message) for r in rows]


def job_out(job: FineTuneJob, dataset: DatasetInfo) -> JobOut:
    return JobOut(
        id=job.id, state=JobState(job.state), method=Method(job.method), base_model=job.base_model,
        output_model=job.output_model, auto_experiment=job.auto_experiment, dataset=dataset,
        hyperparameters=dict(job.hyperparameters), progress=job.progress, attempt=job.attempt,
        cancel_requested=job.cancel_requested, worker=job.worker, error=job.error, metrics=dict(job.metrics),
        model_revision=job.model_revision, experiment=job.experiment, created_at=datetime.fromtimestamp(job.created_at, UTC),
        started_at=_when(job.started_at), finished_at=_when(job.finished_at),
    )  # fmt: skip
