"""SQL tables: the audit log of every configuration change (kept forever), API tokens, the
performance monitor's outcome figures and quality posteriors, and fine-tuning jobs with their datasets and logs."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """A moment in UTC, read back with its timezone: SQLite keeps none, and a naive datetime in an
    answer is not the RFC 3339 date-time the API's schema promises."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class AuditEntry(Base):
    """One object's change in one committed (or pending) change set."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_object", "kind", "name", "revision"),
        Index("ix_audit_revision", "revision"),
        Index("ix_audit_epoch_revision", "epoch", "revision"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    change_id: Mapped[str] = mapped_column(String(36), index=True)
    # Null while pending: the store revision is known only after the commit succeeds.
    revision: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The store epoch the revision belongs to (controlplane/store/epoch.py); null on rows older than epochs.
    epoch: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | committed
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))  # create | update | delete
    before: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")


class ApiToken(Base):
    """A bearer token; only its keyed hash is stored (HMAC-SHA256 under the API keys' pepper, or a
    plain SHA-256 without one, and for tokens made before; tokens are random, so no slow hash)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    prefix: Mapped[str] = mapped_column(String(32), default="", server_default="")
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    previous_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    previous_valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class OutcomeBucket(Base):
    """Router outcomes aggregated per time bucket and model / node / route / variant (the
    performance monitor's figures). Empty strings stand for "none" so the key stays unique."""

    __tablename__ = "outcome_buckets"
    __table_args__ = (
        UniqueConstraint("bucket", "route", "model", "node", "variant", name="uq_outcome_bucket"),
        Index("ix_outcome_bucket_model", "model", "bucket"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bucket: Mapped[int] = mapped_column(Integer, index=True)  # unix seconds of the bucket's start
    route: Mapped[str] = mapped_column(String(253))
    model: Mapped[str] = mapped_column(String(253))
    node: Mapped[str] = mapped_column(String(253))
    variant: Mapped[str] = mapped_column(String(253))
    requests: Mapped[int] = mapped_column(Integer)
    ok: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    cancelled: Mapped[int] = mapped_column(Integer)
    total_ms_sum: Mapped[float] = mapped_column(Float)
    ttft_ms_sum: Mapped[float] = mapped_column(Float)
    tokens_sum: Mapped[int] = mapped_column(Integer)
    tps_sum: Mapped[float] = mapped_column(Float)  # tokens/s summed over the requests that report it
    tps_n: Mapped[int] = mapped_column(Integer)
    latency_hist: Mapped[list[int]] = mapped_column(JSON)  # counts per bound of LATENCY_BOUNDS_MS
    ttft_hist: Mapped[list[int]] = mapped_column(JSON)
    signals: Mapped[dict[str, int]] = mapped_column(JSON)  # automatic quality signal -> answers that showed it


class UsageBucket(Base):
    """Tokens and requests per time bucket and API key / tenant / route / model (usage and spend).
    Empty strings stand for "none" (anonymous requests, no route)."""

    __tablename__ = "usage_buckets"
    __table_args__ = (
        UniqueConstraint("bucket", "api_key", "tenant", "route", "model", name="uq_usage_bucket"),
        Index("ix_usage_bucket_tenant", "tenant", "bucket"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bucket: Mapped[int] = mapped_column(Integer, index=True)
    api_key: Mapped[str] = mapped_column(String(253))
    tenant: Mapped[str] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(253))
    model: Mapped[str] = mapped_column(String(253))
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    estimated: Mapped[int] = mapped_column(BigInteger)  # requests whose counts the router estimated


class OutcomeSample(Base):
    """One raw outcome, kept for a bounded retention (exact percentiles over short windows)."""

    __tablename__ = "outcome_samples"
    __table_args__ = (
        Index("ix_outcome_sample_at", "at"),
        Index("ix_outcome_sample_model", "model", "at"),
        Index("ix_outcome_sample_request", "request_id"),  # feedback finds its answer by it
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # the record's own key: a resend is seen here
    at: Mapped[float] = mapped_column(Float)
    request_id: Mapped[str] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(253))
    model: Mapped[str] = mapped_column(String(253))
    node: Mapped[str] = mapped_column(String(253))
    variant: Mapped[str] = mapped_column(String(253))
    status: Mapped[str] = mapped_column(String(16))
    total_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float] = mapped_column(Float)
    tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    signals: Mapped[list[str]] = mapped_column(JSON)
    cls: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the quality strategy's request class


class QualityStat(Base):
    """The evidence for one (route, request class, model), decayed to ``at`` (unix time): weights of
    successes and failures, and of judge and feedback scores with their sum and sum of squares."""

    __tablename__ = "quality_stats"

    route: Mapped[str] = mapped_column(String(253), primary_key=True)
    cls: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(253), primary_key=True)
    successes: Mapped[float] = mapped_column(Float)
    failures: Mapped[float] = mapped_column(Float)
    scores: Mapped[float] = mapped_column(Float)
    score_sum: Mapped[float] = mapped_column(Float)
    score_sq: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)


class MonitorOffset(Base):
    """The last outcome-stream entry folded into the figures, written in the same transaction as
    them: a record delivered again after a crash is recognised and skipped."""

    __tablename__ = "monitor_offsets"

    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_id: Mapped[str] = mapped_column(String(64))
    applied: Mapped[int] = mapped_column(Integer)


class Feedback(Base):
    """A judgement of one answer, with the model, node, route and variant that gave it."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_request", "request_id"),
        Index("ix_feedback_model", "model", "at"),
        Index("ux_feedback_request_submitter", "request_id", "submitter", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128))
    submitter: Mapped[str] = mapped_column(String(200), default="", server_default="")  # the token's name
    at: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(253))
    node: Mapped[str] = mapped_column(String(253))
    route: Mapped[str] = mapped_column(String(253))
    variant: Mapped[str] = mapped_column(String(253))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    thumbs: Mapped[str | None] = mapped_column(String(8), nullable=True)
    labels: Mapped[list[str]] = mapped_column(JSON)
    comment: Mapped[str] = mapped_column(Text)


# The job states that are not final (schemas.finetune.FINAL_STATES; a unit test keeps the two in step).
ACTIVE_JOB_STATES = "state IN ('queued', 'running', 'registering')"


class FineTuneDataset(Base):
    """Training rows as submitted (JSONL), stored once per content digest."""

    __tablename__ = "finetune_datasets"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class FineTuneJob(Base):
    """One fine-tuning job: the source of truth for its state. Workers write it only while their
    ``attempt`` is the current one (a lost worker that comes back cannot overwrite a newer run)."""

    __tablename__ = "finetune_jobs"
    __table_args__ = (
        Index("ix_finetune_state", "state"),
        Index("ix_finetune_created", "created_at"),
        # one active job per output model, even for two submits at the same instant
        Index(
            "ux_finetune_active_output", "output_model", unique=True,
            postgresql_where=text(ACTIVE_JOB_STATES), sqlite_where=text(ACTIVE_JOB_STATES),
        ),
    )  # fmt: skip

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16))
    base_model: Mapped[str] = mapped_column(String(253))
    output_model: Mapped[str] = mapped_column(String(253))
    auto_experiment: Mapped[bool] = mapped_column(Boolean)
    experiment_share: Mapped[float] = mapped_column(Float)
    hyperparameters: Mapped[dict[str, object]] = mapped_column(JSON)
    dataset_id: Mapped[str] = mapped_column(String(80))
    base_spec: Mapped[dict[str, object]] = mapped_column(JSON)  # the base Model's document when the job was submitted
    progress: Mapped[float] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    metrics: Mapped[dict[str, object]] = mapped_column(JSON)
    result: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)  # the Model document to register
    model_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    experiment: Mapped[str | None] = mapped_column(String(253), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class FineTuneLog(Base):
    """A line of a job's log, numbered for streaming (``id`` is the SSE event id)."""

    __tablename__ = "finetune_logs"
    __table_args__ = (Index("ix_finetune_log_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)


class Artifact(Base):
    """A file kept by content (``sha256:…``), such as a fine-tuned adapter's weights; its bytes are
    in ``artifact_chunks`` so that neither side holds a whole file in memory."""

    __tablename__ = "artifacts"

    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


class ArtifactChunk(Base):
    __tablename__ = "artifact_chunks"

    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class JudgeQueued(Base):
    """An answer waiting for the LLM judge: queued in the transaction that folds its outcome in, and
    taken off in the one that stores the judge's score, so a monitor that dies or loses the lead
    between the two leaves it to the next leader (each answer judged once, none dropped)."""

    __tablename__ = "judge_queue"
    __table_args__ = (Index("ix_judge_queue_at", "at"),)

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    record: Mapped[str] = mapped_column(Text)  # the outcome record (JSON), with the question and the answer
