"""The outcome record: one finished router request, as the router writes it to the outcome stream
(Redis) and the performance monitor reads it. Field names are short: the router writes one per
request."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from schemas.common import INT_MAX, Int64

#: The Redis stream outcome records go to, and the monitor's consumer group on it.
OUTCOME_STREAM = "llmtune:outcomes"
MONITOR_GROUP = "monitor"


class OutcomeRecord(BaseModel):
    key: str = Field(min_length=1, max_length=64, description="Unique to this record (the router's process and sequence).")
    at: float = Field(description="Unix time the request finished.")
    id: str = Field(description="The request id (x-request-id).")
    route: str | None = None
    model: str
    node: str
    variant: str | None = None
    status: Literal["ok", "error", "cancelled"]
    decision_us: float = Field(ge=0)
    ttft_ms: float = Field(ge=0, description="Time to the first byte of the answer.")
    total_ms: float = Field(ge=0)
    attempts: int = Field(ge=1, le=INT_MAX)
    tokens: int | None = Field(default=None, ge=0, le=INT_MAX, description="Generated tokens (Ollama's eval_count).")
    api_key: str | None = Field(default=None, max_length=253, description="The name of the API key it came with.")
    tenant: str | None = Field(default=None, max_length=128, description="The tenant it counted for.")
    prompt_tokens: int = Field(default=0, ge=0, le=INT_MAX, description="Prompt tokens (the upstream's count).")
    completion_tokens: int = Field(default=0, ge=0, le=INT_MAX, description="Completion tokens (the upstream's count).")
    estimated: bool = Field(default=False, description="The counts are the router's estimate: the upstream gave none.")
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$", description="The W3C trace it belongs to.")
    tokens_per_s: float | None = Field(default=None, ge=0)
    signals: list[str] = Field(
        default_factory=list, description="Automatic quality signals: empty, truncated, refusal, invalid_json."
    )
    cls: str | None = Field(default=None, max_length=200, description="The quality strategy's request class.")
    chosen: str | None = Field(default=None, max_length=253, description="The model the quality strategy chose first.")
    why: str | None = Field(default=None, max_length=32, description="Why it won: thompson, explore, only, floor, fallback.")
    scores: dict[str, float] = Field(default_factory=dict, max_length=64, description="The quality scores it drew per model.")
    question: str | None = Field(default=None, max_length=8000, description="The request's text (sampled, for the judge).")
    answer: str | None = Field(default=None, max_length=8000, description="The answer's text (the same sampled share).")


Label = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")]


UsageGroup = Literal["key", "tenant", "model", "route"]


class UsageRow(BaseModel):
    group: str = Field(description="The key, tenant, model or route ('' for none: anonymous, no route).")
    requests: Int64
    prompt_tokens: Int64
    completion_tokens: Int64
    total_tokens: Int64
    estimated_requests: Int64 = Field(description="Requests whose counts are the router's estimate.")
    last_at: float | None = Field(default=None, description="Start of the last bucket (minute) with a request in the range.")


class UsageReport(BaseModel):
    group_by: UsageGroup
    start: float = Field(description="Unix time the report starts (a bucket's start).")
    end: float
    rows: list[UsageRow]


class FeedbackIn(BaseModel):
    """A person's (or an application's) judgement of one answer, by its request id."""

    model_config = {"extra": "forbid"}

    request_id: str = Field(min_length=1, max_length=128, description="The x-request-id the router answered with.")
    score: float | None = Field(default=None, ge=0, le=1, description="0 (bad) to 1 (good).")
    thumbs: Literal["up", "down"] | None = None
    labels: list[Label] = Field(default_factory=list, max_length=20)
    comment: str = Field(default="", max_length=4000)

    @model_validator(mode="after")
    def _judged(self) -> FeedbackIn:
        if self.score is None and self.thumbs is None:
            raise ValueError("give a score (0 to 1) or thumbs ('up' or 'down')")
        return self


class FeedbackOut(BaseModel):
    id: Int64
    request_id: str
    at: float
    model: str
    node: str
    route: str | None
    variant: str | None
    score: float | None
    thumbs: Literal["up", "down"] | None
    labels: list[str]
    comment: str
    submitter: str = ""  # the name of the token that sent it


class Percentiles(BaseModel):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class FeedbackFigures(BaseModel):
    count: Int64
    mean_score: float | None = Field(description="Thumbs up counts 1, down 0.")


class Figures(BaseModel):
    """Requests over a window, for the fleet or one model."""

    requests: Int64
    ok: Int64
    errors: Int64
    cancelled: Int64
    error_rate: float | None = Field(ge=0, le=1, description="None: no requests.")
    latency_ms: Percentiles = Field(description="Whole requests, every status.")
    ttft_ms: Percentiles = Field(description="Time to the first token, answered requests.")
    tokens_per_s: float | None = Field(ge=0, description="Mean generation speed.")
    signals: dict[str, Int64] = Field(description="Automatic quality signals (empty, truncated, refusal, invalid_json) by count.")
    feedback: FeedbackFigures


class MetricsSummary(BaseModel):
    window_s: float = Field(gt=0)
    since: float = Field(description="Unix time the window starts.")
    fleet: Figures
    models: dict[str, Figures]


class RateCI(BaseModel):
    mean: float | None
    ci95: list[float | None] = Field(min_length=2, max_length=2, description="95% interval, low and high (None: unknown).")


class LatencyResult(RateCI):
    p50: float | None
    p95: float | None
    p99: float | None


class FeedbackResult(RateCI):
    count: Int64


class VariantResult(BaseModel):
    variant: str
    requests: Int64 = Field(description="Answered by the variant's model, or failed (a fallback's answer counts as failed).")
    success_rate: float | None = Field(ge=0, le=1)
    success_rate_ci95: list[float | None] = Field(min_length=2, max_length=2)
    latency_ms: LatencyResult
    feedback: FeedbackResult
    guardrails_breached: list[str]


class Comparison(BaseModel):
    """A variant against the baseline (the first) on the experiment's primary metric."""

    baseline: str
    variant: str
    test: str
    statistic: float
    p_value: float = Field(ge=0, le=1)
    difference: float
    significant: bool = Field(description="p < 0.05.")
    verdict: str


class ExperimentResults(BaseModel):
    experiment: str
    route: str
    state: str
    primary_metric: str
    variants: list[VariantResult]
    comparisons: list[Comparison]
    probability_best: dict[str, float] = Field(description="Per variant, the probability of the highest success rate.")


class ExperimentChange(BaseModel):
    """What a stop or a promotion wrote."""

    experiment: str
    revision: Int64 = Field(description="The configuration revision it was written at.")
    state: Literal["stopped", "completed"]
    promoted: str | None = Field(default=None, description="The variant whose model became the route's target.")
