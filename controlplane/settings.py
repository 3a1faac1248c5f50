"""Control-plane settings (pydantic-settings): env prefix ``LLMTUNE_``, nested groups with ``__``.

Example: ``LLMTUNE_STORE__ENDPOINTS=http://10.0.0.1:2379,http://10.0.0.2:2379``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from controlplane.store.settings import StoreSettings


class DbSettings(BaseModel):
    url: str = Field(
        default="sqlite:///.data/llmtune.db",
        description="SQLAlchemy URL of the metadata database (postgresql+psycopg://… in production).",
    )


class AuthSettings(BaseModel):
    bootstrap_token: SecretStr | None = Field(
        default=None, description="Admin token accepted from the environment (bootstrap; rotate via the API)."
    )


class KeySettings(BaseModel):
    """The server-side pepper of API keys, shared by the control plane (which hashes new secrets)
    and every router (which hashes what clients present). Keys cannot be issued or checked without it."""

    pepper: SecretStr | None = Field(default=None, description="The pepper itself (32+ random characters).")
    pepper_file: Path | None = Field(default=None, description="A file holding the pepper (a mounted Secret); wins over pepper.")

    def pepper_bytes(self) -> bytes | None:
        """The pepper, or None when neither setting is given; ValueError when it is too short to be one."""
        if self.pepper_file is not None:
            value = self.pepper_file.read_text().strip()
        elif self.pepper is not None:
            value = self.pepper.get_secret_value()
        else:
            return None
        if len(value) < 16:
            raise ValueError("the API key pepper must be at least 16 characters (e.g. openssl rand -hex 32)")
        return value.encode()


class ApiSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Bind address of the REST API.")
    port: int = Field(default=8700, ge=1, le=65535, description="Port of the REST API.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond).")
    max_metric_streams: int = Field(
        default=32, ge=1, le=10_000, description="Live metrics streams (/api/v1/metrics/stream) open at once; 503 past it."
    )
    shutdown_grace_s: float = Field(
        default=10.0, gt=0, le=600,
        description="On SIGTERM, how long requests in flight (and open watch/metrics streams) get before they are closed.",
    )  # fmt: skip
    ui_dir: Path | None = Field(
        default=None, description="The built web UI served at /ui (default: the checkout's web/dist, built by 'make ui')."
    )
    max_delete_share: float = Field(
        default=0.5, gt=0, le=1,
        description="A change set deleting several objects and more than this share of them (or all) needs force: true.",
    )  # fmt: skip


class RouterClientSettings(BaseModel):
    """The router the control plane calls on its own account (RAG embeddings and answers, the judge)
    and the web UI's playground relays to."""

    url: str = Field(default="http://127.0.0.1:8701", description="The router's URL.")
    timeout_s: float = Field(default=300.0, gt=0, le=3600, description="Longest wait for one answer of the router.")
    attempts: int = Field(default=3, ge=1, le=10, description="Tries of a request the router could not have begun to work on.")


class RagSettings(BaseModel):
    data_dir: Path = Field(default=Path(".data/rag"), description="Embedded Chroma's files and the document catalog.")
    redis_url: str | None = Field(
        default=None, description="Redis for the query cache (redis://host:6379/0); in process when unset."
    )
    max_document_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="Largest document accepted (413 beyond).")
    max_batch_documents: int = Field(default=1000, ge=1, description="Most documents in one ingest request.")
    max_batch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Most text in one ingest request.")
    embed_batch: int = Field(default=64, ge=1, le=4096, description="Chunks per embedding request.")
    cache_ttl_s: int = Field(default=600, ge=1, description="Lifetime of cached query embeddings and retrievals.")
    reranker_dir: Path | None = Field(
        default=None, description="A folder with an ONNX cross-encoder (model.onnx, tokenizer.json) for collections that rerank."
    )


class MonitorSettings(BaseModel):
    redis_url: str | None = Field(
        default=None, description="Redis holding the routers' outcome stream; the monitor is off when unset."
    )
    bucket_s: int = Field(default=60, ge=1, le=86_400, description="Width of a figures bucket.")
    keep_samples_s: float = Field(default=86_400, gt=0, description="How long raw outcome samples are kept.")
    batch: int = Field(default=500, ge=1, le=10_000, description="Records folded in per transaction.")
    stream_max_age_s: float = Field(
        default=900, ge=10, le=7 * 86_400,
        description="Outcome stream entries older than this are trimmed even if unread (acknowledged ones go at once).",
    )  # fmt: skip
    guardrails_every_s: float = Field(default=30.0, gt=0, description="How often running experiments' guardrails are checked.")
    quality_every_s: float = Field(
        default=5.0, ge=0.2, le=300,
        description="How often the quality strategy's posteriors are published to the routers and its guardrails checked.",
    )  # fmt: skip
    judge_route: str | None = Field(default=None, description="Route of the LLM judge; sampled answers are scored when set.")
    judge_rubric: str | None = Field(default=None, description="The judge's instructions (the default asks for a 0-1 score).")
    host: str = Field(default="127.0.0.1", description="Bind address of /healthz and /metrics of a monitor process.")
    port: int = Field(default=8702, ge=1, le=65535, description="Port of /healthz and /metrics of a monitor process.")


class FineTuneSettings(BaseModel):
    """Shared by the control plane (which queues, reaps and registers) and the worker (which trains)."""

    redis_url: str | None = Field(default=None, description="Redis of the job queue (arq); fine-tuning is off when unset.")
    queue: str = Field(default="llmtune:finetune", description="arq queue name.")
    heartbeat_s: float = Field(default=2.0, gt=0, description="How often a worker writes a running job's heartbeat, progress.")
    stale_after_s: float = Field(default=30.0, gt=0, description="A running job with an older heartbeat is lost: queued again.")
    max_attempts: int = Field(default=3, ge=1, le=20, description="Runs of a job (lost workers included) before it fails.")
    job_timeout_s: float = Field(default=24 * 3600, gt=0, description="A run longer than this is stopped and fails.")
    artifacts_dir: Path = Field(
        default=Path(".data/finetune"), description="Where the worker writes adapters; agents must reach it (shared storage)."
    )
    max_dataset_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Largest dataset accepted.")
    max_concurrent: int = Field(default=1, ge=1, le=64, description="Jobs one worker runs at once.")


class AutoscalerSettings(BaseModel):
    """The autoscaler (one leader among the control planes) sizes Models with ``placement.autoscale``."""

    enabled: bool = Field(default=True, description="Run the autoscaler's loop (it acts only on Models with autoscale).")
    every_s: float = Field(default=3.0, ge=0.1, le=60, description="How often it decides (2 to 5 s suits most fleets).")
    stable_window_s: float = Field(default=60.0, gt=0, le=3600, description="The window the load is averaged over.")
    panic_window_s: float = Field(default=6.0, gt=0, le=600, description="The short window that detects bursts.")
    scale_down_delay_s: float = Field(
        default=180.0, gt=0, le=3600,
        description="Scaling down follows the largest recommendation over this window (at least the stable window).",
    )  # fmt: skip
    stale_after_s: float = Field(
        default=10.0, gt=0, le=300, description="A router report older than this makes the load unknown (never a scale-down)."
    )
    node_grace_s: float = Field(
        default=30.0, ge=0, le=3600, description="A node down this long has its replicas placed elsewhere (one node a tick)."
    )
    lease_ttl_s: int = Field(
        default=10, ge=2, le=300,
        description="The leader's lease: another control plane leads within about this long after the leader dies; the "
        "leader stops writing when it has not renewed it for two thirds of it.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _windows(self) -> AutoscalerSettings:
        if not self.panic_window_s <= self.stable_window_s <= self.scale_down_delay_s:
            raise ValueError("the windows must grow: panic_window_s <= stable_window_s <= scale_down_delay_s")
        return self


#: What a control-plane replica does (``LLMTUNE_ROLES=api,rag``): see ``controlplane.runtime.ControlPlane``.
Role = Literal["api", "rag", "monitor", "finetune", "autoscaler", "upkeep"]
ROLES: tuple[Role, ...] = ("api", "rag", "monitor", "finetune", "autoscaler", "upkeep")


class Settings(BaseSettings):
    """Every control-plane setting; read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="LLMTUNE_", env_nested_delimiter="__", extra="ignore")

    roles: Annotated[list[Role], NoDecode] = Field(
        default_factory=lambda: list(ROLES), min_length=1,
        description="What this replica does, comma-separated: api, rag, monitor, finetune, autoscaler, upkeep (or all).",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        """Settings that moved say so, rather than being ignored."""
        if isinstance(data, dict):
            for group in ("rag", "monitor"):
                if isinstance(data.get(group), dict) and "router_url" in data[group]:
                    raise ValueError(f"LLMTUNE_{group.upper()}__ROUTER_URL was replaced by LLMTUNE_ROUTER_CLIENT__URL "
                                     "(one router URL for RAG, the judge and the playground)")  # fmt: skip
        return data

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, value: object) -> object:
        if isinstance(value, str):
            names = [part.strip() for part in value.split(",") if part.strip()]
            return list(ROLES) if names == ["all"] else names
        return value

    leader_ttl_s: int = Field(
        default=10, ge=2, le=300,
        description="The lease of the leaders of the monitor, fine-tuning and upkeep loops: another replica leads within "
        "about this long after the leader dies; a leader stops acting when it has not renewed it for two thirds of it.",
    )  # fmt: skip
    router_client: RouterClientSettings = Field(default_factory=RouterClientSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    finetune: FineTuneSettings = Field(default_factory=FineTuneSettings)
    autoscaler: AutoscalerSettings = Field(default_factory=AutoscalerSettings)
