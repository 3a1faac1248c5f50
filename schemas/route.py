"""The ``Route`` kind: how requests are matched and spread over models."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from schemas.common import INT_MAX, ConfigObject, Int64, Name, Strict
from schemas.model import OllamaOptions


class Task(StrEnum):
    CHAT = "chat"
    CODE = "code"
    MATH = "math"
    SUMMARIZATION = "summarization"
    EXTRACTION = "extraction"
    EMBEDDING = "embedding"


class Strategy(StrEnum):
    WEIGHTED = "weighted"
    CONTEXT_AWARE = "context_aware"
    BEST_QUALITY = "best_quality"
    LOWEST_COST = "lowest_cost"
    LOWEST_LATENCY = "lowest_latency"
    LEAST_LOADED = "least_loaded"
    QUALITY = "quality"


class RouteMatch(Strict):
    """A request matches when every non-empty field matches (lists: any entry)."""

    model_aliases: list[str] = Field(default_factory=list, description="Model names clients ask for.")
    tasks: list[Task] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)


class RouteTarget(Strict):
    model: Name = Field(description="Name of a Model object.")
    weight: int = Field(default=1, ge=0, le=10_000)
    options: OllamaOptions | None = Field(default=None, description="Per-target option overrides.")


class Timeouts(Strict):
    connect_ms: int = Field(default=2_000, ge=1, le=600_000)
    first_token_ms: int = Field(default=30_000, ge=1, le=3_600_000)
    total_ms: int = Field(default=120_000, ge=1, le=3_600_000)
    idle_ms: int = Field(
        default=60_000, ge=1, le=3_600_000,
        description="A streamed answer that sends nothing for this long after its first byte is ended with an error.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _ordered(self) -> Timeouts:
        if self.first_token_ms > self.total_ms:
            raise ValueError("first_token_ms exceeds total_ms")
        return self


RetryOn = Literal["error", "timeout", "overloaded"]


def _retry_on_all() -> list[RetryOn]:
    return ["error", "timeout", "overloaded"]


class Retries(Strict):
    max_attempts: int = Field(
        default=2, ge=0, le=10, description="Attempts in all, the first included (0 counts as 1: no retry)."
    )
    backoff_ms: int = Field(
        default=50, ge=0, le=60_000,
        description="Wait before the first retry; doubling after each, with up to as much again of random jitter, "
        "never past the route's time budget.",
    )  # fmt: skip
    retry_on: list[RetryOn] = Field(default_factory=_retry_on_all)


class CircuitBreaker(Strict):
    """Per node and model: stop sending after consecutive failures, probe again after a pause."""

    consecutive_failures: int = Field(default=5, ge=1, le=1000)
    open_s: float = Field(default=30.0, gt=0, le=3600, description="How long a tripped breaker stays open.")
    half_open_probes: int = Field(default=1, ge=1, le=100)


class QueueSpec(Strict):
    """Requests that find every node of their models at its in-flight limit wait here, by their
    key's priority class (high, normal, low), first come first served within a class."""

    max_wait_ms: int = Field(default=5_000, ge=0, le=600_000, description="Longest wait for a slot (then 503).")
    max_depth: int = Field(
        default=100, ge=0, le=100_000, description="Requests waiting per model at most (then 503); 0: none wait."
    )


class QualityGuardrails(Strict):
    """When the route's answers as a whole breach these over ``window_s``, the monitor turns the
    ``quality`` strategy off (``quality.enabled: false``, in the audit log): the static weights serve."""

    max_error_rate: float | None = Field(default=0.25, gt=0, le=1, description="Failed (or fallen back) share of answers.")
    max_p95_latency_ms: int | None = Field(default=None, gt=0, le=INT_MAX)
    min_samples: int = Field(default=50, ge=1, le=INT_MAX, description="Answers in the window before the guardrails act.")
    window_s: int = Field(default=300, ge=10, le=86_400)


class QualitySpec(Strict):
    """How the ``quality`` strategy chooses: Thompson sampling on the quality posterior of each
    (request class, model), learned by the monitor from judge scores, feedback, automatic signals
    and errors."""

    enabled: bool = Field(default=True, description="False: the route's static weights serve (the guardrails set it).")
    explore: float = Field(
        default=0.05, ge=0, le=0.5, description="Share of a class's requests each fitting model gets at least (exploration)."
    )
    cost_weight: float = Field(
        default=0.0, ge=0, le=4,
        description="Sampled quality is divided by cost**cost_weight: 0 ignores cost, 1 is quality per unit cost.",
    )  # fmt: skip
    floor: float | None = Field(
        default=None, ge=0, le=1, description="A model whose mean quality for a class is below this is not chosen for it."
    )
    min_samples: int = Field(default=20, ge=1, le=INT_MAX, description="Evidence (decayed answers) before the floor applies.")
    half_life_s: float = Field(
        default=3600, ge=1, le=30 * 86_400,
        description="Evidence loses half its weight in this time, so a changed model is followed.",
    )  # fmt: skip
    classifier: Name | None = Field(default=None, description="Classifier object that gives the class's task (else the rules).")
    by_tenant: bool = Field(default=False, description="The tenant is part of the class (one posterior per tenant).")
    guardrails: QualityGuardrails = Field(default_factory=QualityGuardrails)


class RouteSpec(Strict):
    priority: Int64 = Field(default=0, description="Higher wins when several routes match.")
    match: RouteMatch = Field(default_factory=RouteMatch)
    targets: list[RouteTarget] = Field(min_length=1)
    strategy: Strategy = Strategy.WEIGHTED
    fallbacks: list[Name] = Field(default_factory=list, description="Models tried in order after the targets.")
    sticky_key: str | None = Field(default=None, description="Request attribute hashed for sticky splits.")
    experiment: Name | None = Field(default=None, description="Experiment that splits this route's traffic.")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    queue: QueueSpec = Field(default_factory=QueueSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec, description="The quality strategy's settings.")

    @model_validator(mode="after")
    def _consistent(self) -> RouteSpec:
        names = [t.model for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("targets name a model twice")
        if sum(t.weight for t in self.targets) == 0:
            raise ValueError("target weights add up to 0; at least one must be positive")
        if len(set(self.fallbacks)) != len(self.fallbacks):
            raise ValueError("fallbacks name a model twice")
        return self


class Route(ConfigObject):
    """Matches requests and chooses among target models."""

    plural: ClassVar[str] = "routes"
    kind: Literal["Route"] = "Route"
    spec: RouteSpec
