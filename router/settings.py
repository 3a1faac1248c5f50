"""Router settings: ``LLMTUNE_ROUTER__*`` plus the shared ``LLMTUNE_STORE__*`` and ``LLMTUNE_KEYS__*`` groups."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.settings import KeySettings
from controlplane.store.settings import StoreSettings
from router.auth import Mode
from router.limits import OnRedisDown


class RouterGroup(BaseModel):
    host: str = Field(default="127.0.0.1", description="Bind address (point Ollama or OpenAI clients here).")
    port: int = Field(default=8701, ge=1, le=65535)
    auth: Mode = Field(
        default="required",
        description="API keys: required (401 without one), optional (anonymous requests served, keys checked) or off. "
        "required and optional need the keys pepper (LLMTUNE_KEYS__PEPPER_FILE).",
    )
    name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="This router's name in the store (its load report); host name and pid when unset.",
    )  # fmt: skip
    limits_redis_url: str | None = Field(
        default=None,
        description="Redis holding API keys' rate-limit and budget counters (shared by all routers); without it each "
        "router counts alone.",
    )
    limits_on_redis_down: OnRedisDown = Field(
        default="local",
        description="When that Redis cannot be reached: local (each router enforces limit / routers alive), open (no "
        "limits) or closed (503 for keys with limits).",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="An OpenTelemetry collector's OTLP/gRPC address (http://collector:4317): the router exports spans there; "
        "off when unset (the W3C trace context is propagated either way).",
    )
    outcomes_redis_url: str | None = Field(
        default=None,
        description="Redis whose stream receives an outcome record per request (the monitor reads it); logged when unset.",
    )
    outcomes_max_age_s: float = Field(
        default=900, ge=10, le=7 * 86_400,
        description="Stream entries older than this are trimmed on each write, read or not (the monitor trims what it read).",
    )
    judge_sample: float = Field(
        default=0.0, ge=0, le=1, description="Share of whole answers sent with their texts, for the monitor's LLM judge."
    )
    max_answer_bytes: int = Field(
        default=256 << 20, ge=1 << 20, le=4 << 30,
        description="Bytes of one non-streamed upstream answer at most (past it: 502); streams are relayed as read.",
    )  # fmt: skip
    max_body_bytes: int = Field(default=8 << 20, ge=1 << 10, le=1 << 30, description="Largest request body (413 past it).")
    max_buffered_bytes: int = Field(
        default=12 << 20, ge=1 << 20, le=16 << 30,
        description="Request bodies on their way in (partly received or pipelined), all clients together (503 past it); "
        "at least max_body_bytes. Bodies of requests being answered do not count.",
    )  # fmt: skip
    max_connections: int = Field(default=4096, ge=1, le=1_000_000, description="Open client connections (503 past it).")
    shutdown_grace_s: float = Field(
        default=10.0, gt=0, le=600, description="On SIGTERM, how long answers in flight get to finish before they are cut."
    )


class RouterSettings(BaseSettings):
    """Every router setting; read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="LLMTUNE_", env_nested_delimiter="__", extra="ignore")

    store: StoreSettings = Field(default_factory=StoreSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    router: RouterGroup = Field(default_factory=RouterGroup)
