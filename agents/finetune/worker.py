"""The worker: arq hands it ``run_job(job_id, attempt)``; it claims the run in SQL (queued → running
for that attempt, or skips it), trains in a thread, and every ``heartbeat_s`` writes the heartbeat,
progress, metrics and log lines. A beat that finds the run no longer its own (re-queued after the
worker was thought lost) or asked to cancel stops the training between steps. The result — the
Model to register — goes back in the job's row (``registering``); the control plane writes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agents.finetune import lora, modelfile
from agents.finetune.report import Cancelled, JobError, Report
from controlplane.db.artifacts import ArtifactStore
from controlplane.db.jobs import JobStore, ended_channel, job_deserialize, job_serialize
from controlplane.db.models import FineTuneJob
from controlplane.settings import FineTuneSettings
from schemas.datasets import parse_dataset
from schemas.finetune import JOB_LABEL, JobState, LoraParams, Method, ModelfileParams
from schemas.model import Model

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, jobs: JobStore, artifacts: ArtifactStore, settings: FineTuneSettings, *, name: str | None = None) -> None:
        self.jobs, self.artifacts, self.settings = jobs, artifacts, settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"

    async def run(self, job_id: str, attempt: int) -> str:
        job = await asyncio.to_thread(self.jobs.claim, job_id, attempt, self.name)
        if job is None:
            return f"skipped: {job_id} is not queued as attempt {attempt}"
        report, stop = Report(), threading.Event()
        report.log(f"attempt {attempt} started on worker {self.name}")
        work = asyncio.ensure_future(asyncio.to_thread(self._execute, job, report, stop))
        lost = False
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self.settings.heartbeat_s)
                if done:
                    break
                progress, metrics, lines = report.drain()
                try:
                    await asyncio.to_thread(self.jobs.log, job_id, attempt, lines)
                    beat = await asyncio.to_thread(self.jobs.heartbeat, job_id, attempt, progress=progress, metrics=metrics)
                except SQLAlchemyError as exc:  # the database is away: train on, beat again next time
                    report.requeue_lines(lines)
                    log.warning("job %s: heartbeat not written (%s)", job_id, exc)
                    continue
                if not beat.alive and not stop.is_set():
                    lost = True
                    stop.set()
                    log.warning("job %s attempt %d is no longer this worker's: stopping it", job_id, attempt)
                elif beat.cancel and not stop.is_set():
                    report.log("cancel requested: stopping after the current step", "warning")
                    stop.set()
        except asyncio.CancelledError:  # arq's job timeout, or the worker shutting down
            stop.set()
            await asyncio.shield(self._interrupted(job, work))
            raise
        return await self._finish(job, work, report, lost)

    async def _interrupted(self, job: FineTuneJob, work: asyncio.Future[Model]) -> None:
        await asyncio.wait({work}, timeout=30)
        fresh = await asyncio.to_thread(self.jobs.get, job.id)
        if fresh is not None and fresh.attempt == job.attempt:
            why = f"worker {self.name} stopped or the run exceeded job_timeout_s={self.settings.job_timeout_s:g}"
            await asyncio.to_thread(self.jobs.requeue, fresh, max_attempts=self.settings.max_attempts, why=why)

    async def _finish(self, job: FineTuneJob, work: asyncio.Future[Model], report: Report, lost: bool) -> str:
        if lost:
            report.log("stopped: this run was given up on (no heartbeat in time) and queued again", "warning")
            await asyncio.gather(work, return_exceptions=True)
            await asyncio.to_thread(self.jobs.log, job.id, job.attempt, report.drain()[2])
            return f"lost: {job.id} attempt {job.attempt} was taken over"
        state: JobState
        error: str | None = None
        result: dict[str, Any] | None = None
        try:
            model = work.result()
        except Cancelled as exc:
            state, error = JobState.CANCELLED, f"cancelled on request ({exc})"
        except JobError as exc:
            state, error = JobState.FAILED, str(exc)
        except Exception as exc:
            report.log("".join(traceback.format_exception(exc)).rstrip(), "error")
            state, error = JobState.FAILED, f"{type(exc).__name__}: {exc}"
        else:
            labels = {**model.metadata.labels, JOB_LABEL: job.id}
            model = model.model_copy(update={"metadata": model.metadata.model_copy(update={"labels": labels})})
            state, result = JobState.REGISTERING, model.model_dump(mode="json", exclude={"metadata": {"revision"}})
            report.log(f"trained: model {model.name} goes to the control plane for registration")
        if error:
            report.log(error, "error" if state is JobState.FAILED else "warning")
        _, metrics, lines = report.drain()
        await asyncio.to_thread(self.jobs.log, job.id, job.attempt, lines)
        ok = await asyncio.to_thread(self.jobs.finish, job.id, job.attempt, state, error=error, result=result, metrics=metrics)
        return f"{job.id}: {state.value}" if ok else f"lost: {job.id} attempt {job.attempt} moved on meanwhile"

    def _execute(self, job: FineTuneJob, report: Report, stop: threading.Event) -> Model:
        """The training itself (in a thread)."""
        text = self.jobs.dataset_text(job.dataset_id)
        if text is None:
            raise JobError(f"dataset {job.dataset_id} is gone")
        examples = parse_dataset(text, max_bytes=1 << 62).examples
        base = Model.model_validate(job.base_spec)
        report.log(f"{job.method} job: {len(examples)} rows, base {base.name}, output {job.output_model}")
        if job.method == Method.MODELFILE.value:
            params = ModelfileParams.model_validate(job.hyperparameters)
            model = modelfile.derive(base, job.output_model, examples, params, report)
        else:
            out_dir = Path(self.settings.artifacts_dir) / job.id / f"attempt-{job.attempt}"
            lora_params = LoraParams.model_validate(job.hyperparameters)
            keep = self.artifacts.put_file
            model = lora.train(base, job.output_model, examples, lora_params, report, stop, out_dir, keep=keep)
        if stop.is_set():
            raise Cancelled("before the result was handed over")
        report.progress(1.0)
        return model


async def run_job(ctx: dict[str, Any], job_id: str, attempt: int) -> str:
    """The arq task."""
    runner: JobRunner = ctx["runner"]
    outcome = await runner.run(job_id, attempt)
    if not outcome.startswith("skipped"):
        try:  # the control plane registers at once instead of at its next tick
            await ctx["redis"].publish(ended_channel(runner.settings.queue), job_id)
        except (OSError, RedisError) as exc:
            log.warning("job %s: could not announce its end (%s); the control plane finds it at its next tick", job_id, exc)
    return outcome


async def warm_imports(ctx: dict[Any, Any]) -> None:
    """Import PyTorch, transformers and peft (seconds) in the background when the worker starts,
    not when its first LoRA run does."""

    def load() -> None:
        started = time.perf_counter()
        with contextlib.suppress(JobError):
            lora.imports()
            log.info("PyTorch, transformers and peft loaded in %.1f s", time.perf_counter() - started)

    threading.Thread(target=load, name="warm-imports", daemon=True).start()


def make_worker(settings: FineTuneSettings, engine: Engine, *, name: str | None = None) -> Any:
    """An arq ``Worker`` for the queue; ``max_tries=1`` as lost runs are re-queued by the control
    plane as new attempts (arq's own retry would re-run an attempt the reaper already replaced)."""
    from arq import func
    from arq.connections import RedisSettings
    from arq.worker import Worker

    assert settings.redis_url, "LLMTUNE_FINETUNE__REDIS_URL is not set"
    runner = JobRunner(JobStore(engine), ArtifactStore(engine), settings, name=name)
    return Worker(
        functions=[func(run_job, name="run_job", max_tries=1, timeout=settings.job_timeout_s)],
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        queue_name=settings.queue,
        max_jobs=settings.max_concurrent,
        keep_result=3600,
        poll_delay=0.05,  # how often an idle worker looks at the queue: a run starts within 50 ms
        ctx={"runner": runner},
        on_startup=warm_imports,
        handle_signals=True,
        job_serializer=job_serialize,  # JSON, never pickle (see finetune_jobs.job_serialize)
        job_deserializer=job_deserialize,
    )
