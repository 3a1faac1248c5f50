"""Fine-tuning, the control plane's side: checks and queues jobs (arq on Redis), answers for them,
re-queues the runs of lost workers, and registers what finished runs produced — the new Model and,
with ``auto_experiment``, an A/B test of it against the base — through the one write path.

Queue: arq. It is asyncio-native like the rest of the service, keeps jobs in Redis, and its
``_job_id`` makes enqueueing idempotent: each run is queued as ``<job id>.<attempt>``, so queueing
a run twice (a retried submit, the reaper on two control planes) runs it once. The job's state
lives in SQL (``finetune_jobs``), not in arq: a lost worker's job is found by its stale heartbeat
and queued again as the next attempt (up to ``max_attempts``, then failed) — the documented choice,
as fine-tuning runs are restartable and a node failing should not lose the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError

from controlplane.db.jobs import JobStore, ended_channel, job_deserialize, job_out, job_serialize
from controlplane.db.models import FineTuneJob
from controlplane.services.config import ConfigService
from controlplane.services.errors import (
    AlreadyExists,
    BadRequest,
    Busy,
    HistoryUnavailable,
    InUse,
    NotFound,
    QueueUnavailable,
    ServiceError,
    StaleRevision,
    Unprocessable,
)
from controlplane.services.loops import lead
from controlplane.settings import FineTuneSettings
from controlplane.store.leases import Election, Fence
from controlplane.store.view import ConfigView
from schemas.common import Metadata
from schemas.datasets import Dataset, DatasetInvalid, parse_dataset
from schemas.experiment import Experiment, ExperimentSpec, ExperimentState, Guardrails, Variant
from schemas.finetune import FINAL_STATES, JOB_LABEL, DatasetInfo, FineTuneRequest, JobState, LogLine
from schemas.finetune import FineTuneJob as JobOut
from schemas.model import Capability, Model, Provider
from schemas.route import Route

log = logging.getLogger(__name__)


class Queue(Protocol):
    async def enqueue(self, job_id: str, attempt: int) -> None: ...


class ArqQueue:
    """Runs go to arq as ``run_job(job_id, attempt)`` with ``_job_id = '<id>.<attempt>'``."""

    FUNCTION = "run_job"

    def __init__(self, redis_url: str, queue_name: str) -> None:
        self._url, self._queue = redis_url, queue_name
        self._pool: Any = None

    async def _redis(self) -> Any:
        if self._pool is None:
            from arq import create_pool
            from arq.connections import RedisSettings

            settings = RedisSettings.from_dsn(self._url)
            settings.conn_retries = 0
            self._pool = await create_pool(
                settings, default_queue_name=self._queue, job_serializer=job_serialize, job_deserializer=job_deserialize
            )
        return self._pool

    async def enqueue(self, job_id: str, attempt: int) -> None:
        try:
            pool = await self._redis()
            await pool.enqueue_job(self.FUNCTION, job_id, attempt, _job_id=f"{job_id}.{attempt}")
        except (OSError, RedisError) as exc:  # redis-py's ConnectionError is not the builtin one
            raise QueueUnavailable(f"the job queue (Redis at {self._url}) did not answer: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


def dataset_id(digest: str) -> str:
    return f"ds-{digest[:32]}"


def new_job_id() -> str:
    return f"ft-{uuid.uuid4().hex[:12]}"


def experiment_name(output_model: str) -> str:
    return f"ft-{output_model}"[:63].rstrip("-._")


class FineTuneService:
    def __init__(
        self, jobs: JobStore, config: ConfigService, view: ConfigView, queue: Queue, settings: FineTuneSettings,
        *, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.jobs, self._config, self._view, self._queue, self._settings = jobs, config, view, queue, settings
        self._clock = clock
        self._queued_checked: float | None = None

    # -- datasets ----------------------------------------------------------------------------
    async def upload_dataset(self, text: str) -> DatasetInfo:
        """Check the rows (422 naming the line) and store them once per content."""
        dataset = await asyncio.to_thread(_parse, text, self._settings.max_dataset_bytes)  # up to MiBs: off the loop
        return await asyncio.to_thread(self.jobs.put_dataset, dataset_id(dataset.digest), text, rows=len(dataset.examples))

    async def _dataset_info(self, dataset: str) -> DatasetInfo:
        found = (await asyncio.to_thread(self.jobs.dataset_infos, [dataset])).get(dataset)
        if found is None:
            raise NotFound("Dataset", dataset)
        return found

    # -- jobs --------------------------------------------------------------------------------
    async def submit(self, request: FineTuneRequest, *, actor: str) -> tuple[JobOut, bool]:
        """The job (and whether this call created it). Re-submitting a job id with the same
        request returns the job; with another request it is a conflict."""
        try:
            params = request.params()
        except ValidationError as exc:
            errors = [
                {"field": ".".join(["hyperparameters", *(str(p) for p in e["loc"])]), "message": e["msg"]} for e in exc.errors()
            ]
            raise Unprocessable("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors) from exc
        if request.dataset is not None:
            info = await self.upload_dataset(request.dataset)
        else:
            assert request.dataset_id is not None
            info = await self._dataset_info(request.dataset_id)
        digest = _request_digest(request, info.id)
        if request.job_id is not None:
            existing = await asyncio.to_thread(self.jobs.get, request.job_id)
            if existing is not None:
                return self._answer_resubmit(existing, digest, info), False
        base = self._base(request)
        job = FineTuneJob(
            id=request.job_id or new_job_id(), request_digest=digest, actor=actor, state=JobState.QUEUED.value,
            method=request.method.value, base_model=request.base_model, output_model=request.output_model,
            auto_experiment=request.auto_experiment, experiment_share=request.experiment_share,
            hyperparameters=params.model_dump(mode="json", exclude_defaults=True), dataset_id=info.id,
            base_spec=base.model_dump(mode="json"), progress=0.0, attempt=1, cancel_requested=False, metrics={},
            created_at=time.time(),
        )  # fmt: skip
        if not await asyncio.to_thread(self.jobs.insert, job):
            # the id was taken at the same moment, or an active job makes this output (the unique index)
            existing = await asyncio.to_thread(self.jobs.get, job.id)
            if existing is not None:
                return self._answer_resubmit(existing, digest, info), False
            busy = await asyncio.to_thread(self.jobs.active_output, request.output_model)
            who = f"job {busy.id} ({busy.state})" if busy is not None else "another job"
            raise InUse(f"{who} is making model '{request.output_model}' already; choose another name")
        try:
            await self._queue.enqueue(job.id, 1)
        except Exception:
            await asyncio.to_thread(self.jobs.delete, job.id)  # nothing half-done: no job without a queued run
            raise
        return job_out(job, info), True

    def _answer_resubmit(self, existing: FineTuneJob, digest: str, info: DatasetInfo) -> JobOut:
        if existing.request_digest != digest:
            raise InUse(f"job id '{existing.id}' was submitted with another request; choose another job_id")
        return job_out(existing, info)

    def _base(self, request: FineTuneRequest) -> Model:
        base = self._view.get("models", request.base_model, Model)
        if base is None:
            raise NotFound("Model", request.base_model)
        spec = base.spec
        if spec.provider is not Provider.OLLAMA:
            raise Unprocessable(
                f"model '{base.name}' is served by provider '{spec.provider.value}'; only Ollama models can be fine-tuned",
                [{"field": "base_model", "message": "not an Ollama model"}],
            )
        if not {Capability.CHAT, Capability.COMPLETION} & set(spec.capabilities):
            raise Unprocessable(
                f"model '{base.name}' neither chats nor completes (capabilities {[c.value for c in spec.capabilities]})",
                [{"field": "base_model", "message": "needs the chat or completion capability"}],
            )
        if self._view.get("models", request.output_model, Model) is not None:
            raise AlreadyExists("Model", request.output_model)
        if request.auto_experiment and self._route_of(base.name) is None:
            raise Unprocessable(
                f"auto_experiment needs a route that sends traffic to '{base.name}'; none does. Create one, or submit "
                "without auto_experiment",
                [{"field": "auto_experiment", "message": f"no route targets {base.name}"}],
            )
        return base

    def _route_of(self, model: str) -> Route | None:
        routes = sorted((s.obj for s in self._view.state.values() if isinstance(s.obj, Route)), key=lambda r: r.name)
        return next((r for r in routes if any(t.model == model for t in r.spec.targets)), None)

    async def get(self, job_id: str) -> JobOut:
        job = await asyncio.to_thread(self.jobs.get, job_id)
        if job is None:
            raise NotFound("fine-tuning job", job_id)
        return await self._out(job)

    async def _out(self, job: FineTuneJob) -> JobOut:
        return (await self._outs([job]))[0]

    async def _outs(self, jobs: list[FineTuneJob]) -> list[JobOut]:
        infos = await asyncio.to_thread(self.jobs.dataset_infos, [j.dataset_id for j in jobs])
        return [job_out(j, infos.get(j.dataset_id) or DatasetInfo(id=j.dataset_id, rows=0, bytes=0)) for j in jobs]

    async def recent(self, *, state: JobState | None = None, limit: int = 100) -> list[JobOut]:
        return await self._outs(await asyncio.to_thread(self.jobs.recent, state=state, limit=limit))

    async def cancel(self, job_id: str) -> JobOut:
        job = await asyncio.to_thread(self.jobs.get, job_id)
        if job is None:
            raise NotFound("fine-tuning job", job_id)
        if JobState(job.state) in FINAL_STATES or job.state == JobState.REGISTERING.value:
            raise BadRequest(f"job {job_id} is {job.state}: only queued or running jobs can be cancelled")
        after = await asyncio.to_thread(self.jobs.request_cancel, job_id)
        assert after is not None
        return await self._out(after)

    async def logs(self, job_id: str, *, after: int = 0, limit: int = 1000) -> list[LogLine]:
        if await asyncio.to_thread(self.jobs.get, job_id) is None:
            raise NotFound("fine-tuning job", job_id)
        return await asyncio.to_thread(self.jobs.logs, job_id, after=after, limit=limit)

    async def follow(self, job_id: str, *, after: int = 0, limit: int = 1000) -> tuple[JobOut, list[LogLine]]:
        """The job and its lines after ``after``; the job is read first, so a job seen ended has
        all its lines among them."""
        job = await self.get(job_id)
        return job, await asyncio.to_thread(self.jobs.logs, job_id, after=after, limit=limit)

    # -- the loop ----------------------------------------------------------------------------
    async def run(self, election: Election, redis_url: str, *, interval_s: float = 1.0, iterations: int | None = None) -> None:
        """As the leader of the ``finetune`` election: ``tick`` every ``interval_s``, and at once
        when a worker announces a run it ended (a message on ``<queue>:ended``), so registration
        does not wait for the next tick."""
        ended = Ended(redis_url, ended_channel(self._settings.queue))
        try:
            await lead(election, self.tick, name="fine-tuning jobs", every_s=interval_s, wait=ended.wait, iterations=iterations)
        finally:
            await ended.close()

    async def tick(self, election: Election) -> None:
        """Re-queue lost runs, register finished ones, and now and then make sure queued runs are
        in Redis (a Redis that restarted empty loses them). Every step first checks that this
        replica still leads (``election.fence()``); the SQL changes are compare-and-sets on the
        job's state and attempt, and the registration's write carries the leader's fence, so a
        replica that lost the lead half-way changes nothing another leader did."""
        for job in await asyncio.to_thread(self.jobs.lost, stale_after_s=self._settings.stale_after_s):
            election.fence()
            why = f"worker {job.worker} lost (no heartbeat for {self._settings.stale_after_s:g} s)"
            state = await asyncio.to_thread(self.jobs.requeue, job, max_attempts=self._settings.max_attempts, why=why)
            if state is not None:
                log.warning("fine-tuning job %s: %s; now %s", job.id, why, state.value)
                await asyncio.to_thread(self.jobs.log, job.id, job.attempt, [(time.time(), "warning", f"{why}; {state.value}")])
        now = self._clock()
        if self._queued_checked is None or now - self._queued_checked > self._settings.stale_after_s:
            self._queued_checked = now
            for job in await asyncio.to_thread(self.jobs.in_state, JobState.QUEUED):
                election.fence()
                await self._queue.enqueue(job.id, job.attempt)  # a no-op unless Redis lost the run
        for job in await asyncio.to_thread(self.jobs.in_state, JobState.REGISTERING):
            await self.register(job, fence=election.fence())

    async def register(self, job: FineTuneJob, *, fence: Fence | None = None) -> None:
        """Write the job's Model (and experiment) as one revision; idempotent across replicas.
        ``fence``: the leader's token; the write commits only while it still leads."""
        try:
            model = Model.model_validate(job.result)
        except ValidationError as exc:
            await asyncio.to_thread(self.jobs.registration_failed, job.id, f"the worker's model is invalid: {exc}")
            return
        objects: list[Model | Experiment | Route] = [model]
        expected = {("models", model.name): 0}
        experiment, note = None, None
        if job.auto_experiment:
            route = self._route_of(job.base_model)
            attached = route.spec.experiment if route else None
            running = self._view.get("experiments", attached, Experiment) if attached else None
            if route is None:
                note = f"no route targets {job.base_model} any more: the experiment was not created"
            elif running is not None and running.spec.state is ExperimentState.RUNNING:
                note = f"route {route.name} already runs experiment {running.name}: the model's experiment was not created"
            else:
                experiment = _experiment(job, route)
                moved = route.model_copy(update={"spec": route.spec.model_copy(update={"experiment": experiment.name})})
                objects += [experiment, moved]
                expected[("routes", route.name)] = route.metadata.revision or 0
        exp_name = experiment.name if experiment else None
        current = self._view.get("models", model.name, Model)
        if current is not None and current.metadata.labels.get(JOB_LABEL) == job.id:
            await asyncio.to_thread(self.jobs.registered, job.id, revision=current.metadata.revision or 0, experiment=exp_name)
            return
        actor = f"finetune:{job.actor}"
        try:
            result = await self._config.apply(objects, expected=expected, actor=actor, message=f"fine-tuning job {job.id}",
                                              fence=fence)  # fmt: skip
        except StaleRevision as exc:
            if exc.kind == "routes":
                return  # the route changed under us: the next tick reads it again
            fresh = await self._config.get("models", model.name)
            if fresh.metadata.labels.get(JOB_LABEL) == job.id:  # another control plane registered it first
                await asyncio.to_thread(self.jobs.registered, job.id, revision=fresh.metadata.revision or 0, experiment=exp_name)
                return
            error = f"model '{model.name}' was created by someone else while the job ran; nothing was registered"
            await asyncio.to_thread(self.jobs.registration_failed, job.id, error)
            return
        except (Busy, HistoryUnavailable):
            return  # passing: the next tick tries again
        except ServiceError as exc:  # the change is refused (invalid, too large): it will not pass later either
            await asyncio.to_thread(self.jobs.registration_failed, job.id, f"registration refused, nothing written: {exc}")
            return
        lines = [(time.time(), "info", f"registered model {model.name} at revision {result.revision}")]
        if experiment is not None:
            lines.append((time.time(), "info", f"experiment {experiment.name} started on route {experiment.spec.route}"))
        if note:
            lines.append((time.time(), "warning", note))
        await asyncio.to_thread(self.jobs.log, job.id, job.attempt, lines)
        await asyncio.to_thread(self.jobs.registered, job.id, revision=result.revision, experiment=exp_name)


def _experiment(job: FineTuneJob, route: Route) -> Experiment:
    share = round(job.experiment_share * 1000)
    return Experiment(
        metadata=Metadata(name=experiment_name(job.output_model), labels={JOB_LABEL: job.id}),
        spec=ExperimentSpec(
            route=route.name,
            variants=[
                Variant(name="base", model=job.base_model, weight=1000 - share),
                Variant(name="candidate", model=job.output_model, weight=share),
            ],
            state=ExperimentState.RUNNING,
            guardrails=Guardrails(max_error_rate=0.2, min_samples=50),
        ),
    )


def _parse(text: str, max_bytes: int) -> Dataset:
    try:
        return parse_dataset(text, max_bytes=max_bytes)
    except DatasetInvalid as exc:
        where = f"dataset line {exc.line}" if exc.line else "dataset"
        raise Unprocessable(f"{where}: {exc.message}", [{"field": "dataset", "line": exc.line, "message": exc.message}]) from exc


def _request_digest(request: FineTuneRequest, dataset: str) -> str:
    doc = request.model_dump(mode="json", exclude={"job_id", "dataset", "dataset_id"})
    doc["dataset"] = dataset
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Ended:
    """Waits for a worker's announcement that it ended a run (Redis pub/sub), at most ``at_most_s``;
    reconnects on the next wait when Redis went away, and then just waits the timeout out."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self._url, self._channel = redis_url, channel
        self._client: Any = None
        self._pubsub: Any = None
        self._down = False  # said once per outage, not every wait

    async def wait(self, at_most_s: float) -> None:
        try:
            if self._pubsub is None:
                import redis.asyncio as aioredis

                self._client = aioredis.Redis.from_url(self._url)
                self._pubsub = self._client.pubsub()
                await self._pubsub.subscribe(self._channel)
            await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=at_most_s)
            self._down = False
        except (OSError, RedisError) as exc:
            if not self._down:
                log.warning("fine-tuning: Redis at %s: %s; polling every %g s until it is back", self._url, exc, at_most_s)
            self._down = True
            await self.close()
            await asyncio.sleep(at_most_s)

    async def close(self) -> None:
        pubsub, client, self._pubsub, self._client = self._pubsub, self._client, None, None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
            if client is not None:
                await client.aclose()
