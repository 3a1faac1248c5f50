"""The ``Experiment`` kind: an A/B(/n) split of one route's traffic with guardrails."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from schemas.common import INT_MAX, ConfigObject, Name, Strict
from schemas.model import OllamaOptions


class Metric(StrEnum):
    FEEDBACK_SCORE = "feedback_score"
    SUCCESS_RATE = "success_rate"
    LATENCY = "latency"


class ExperimentState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"
    COMPLETED = "completed"


class Variant(Strict):
    name: Name
    model: Name = Field(description="Model object serving this variant.")
    options: OllamaOptions | None = None
    weight: int = Field(default=1, ge=0, le=10_000)


class Guardrails(Strict):
    max_error_rate: float | None = Field(default=None, gt=0, le=1)
    max_p95_latency_ms: int | None = Field(default=None, gt=0, le=INT_MAX)
    min_samples: int = Field(default=100, ge=1, le=INT_MAX, description="Samples per variant before guardrails act.")


class Bandit(Strict):
    enabled: bool = False
    min_weight: float = Field(default=0.05, ge=0, le=0.5, description="Share each variant keeps at least.")


class ExperimentSpec(Strict):
    route: Name = Field(description="Route whose traffic is split.")
    variants: list[Variant] = Field(min_length=2)
    sticky_key: str | None = Field(default=None, description="Request attribute hashed so a user stays in one variant.")
    primary_metric: Metric = Metric.SUCCESS_RATE
    state: ExperimentState = ExperimentState.DRAFT
    guardrails: Guardrails = Field(default_factory=Guardrails)
    bandit: Bandit = Field(default_factory=Bandit)
    mode: Literal["ab"] = "ab"

    @model_validator(mode="after")
    def _variants(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if sum(v.weight for v in self.variants) == 0:
            raise ValueError("variant weights add up to 0; at least one must be positive")
        return self


class Experiment(ConfigObject):
    """Splits a route's traffic between variants and records which wins."""

    plural: ClassVar[str] = "experiments"
    kind: Literal["Experiment"] = "Experiment"
    spec: ExperimentSpec
