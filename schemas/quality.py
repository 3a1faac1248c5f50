"""Request classes and the quality posterior: what the monitor learns per (route, class, model)
and publishes for the routers (``/<ns>/v1/quality/<route>``), and what the API reports.

A request's class is what the router computes in microseconds: its task, a bucket of its prompt's
length and, where the route asks for it, its tenant (``code/short``, ``chat/long/acme``).

Quality of one answer: whether it succeeded (Beta posterior: an error, a fallback's answer, an
empty, refused or invalid-JSON answer count as failures) and, when scored, how well (Normal
posterior of judge scores and feedback, 0 to 1). Expected quality = P(success) x mean score."""

from __future__ import annotations

import math
import random

from pydantic import BaseModel, Field

from schemas.common import Report

#: Prompt-length buckets (upper bound in estimated tokens, name); the last is open.
LENGTH_BUCKETS: tuple[tuple[int, str], ...] = ((256, "short"), (2048, "medium"), (2**62, "long"))
#: Signals that make an answer a failure (a truncated answer is not: the client's limit cut it).
FAILING_SIGNALS = frozenset({"empty", "refusal", "invalid_json"})
#: Prior of the score's Normal posterior: a mean of 0.5 worth one answer, a variance of 1/16.
PRIOR_SCORE, PRIOR_WEIGHT, PRIOR_VAR = 0.5, 1.0, 0.0625


def length_bucket(tokens: int) -> str:
    (short, _), (medium, _), _ = LENGTH_BUCKETS
    return "short" if tokens <= short else "medium" if tokens <= medium else "long"  # per request: no loop


_KEYS: dict[str, dict[str, str]] = {}  # task -> bucket -> "task/bucket", made once per pair (routers ask per request)


def class_key(task: str, tokens: int, tenant: str | None = None) -> str:
    """``task/bucket`` or, with a tenant, ``task/bucket/tenant``."""
    bucket = length_bucket(tokens)
    base = _KEYS.get(task, {}).get(bucket)
    if base is None:
        base = _KEYS.setdefault(task, {}).setdefault(bucket, f"{task}/{bucket}")
    return base if tenant is None else f"{base}/{tenant}"


class Evidence(BaseModel):
    """Decayed sums for one (route, class, model): weights of successes, failures and scores."""

    successes: float = Field(default=0.0, ge=0)
    failures: float = Field(default=0.0, ge=0)
    scores: float = Field(default=0.0, ge=0, description="Weight of the scores (judge, feedback).")
    score_sum: float = 0.0
    score_sq: float = Field(default=0.0, ge=0)

    @property
    def answers(self) -> float:
        return self.successes + self.failures

    def success_params(self) -> tuple[float, float]:
        """Beta(alpha, beta) of the success rate (a uniform prior)."""
        return 1.0 + self.successes, 1.0 + self.failures

    def score_params(self) -> tuple[float, float]:
        """Mean and standard deviation of the Normal posterior of the mean score."""
        weight = PRIOR_WEIGHT + self.scores
        mean = (PRIOR_WEIGHT * PRIOR_SCORE + self.score_sum) / weight
        spread = self.score_sq / self.scores - (self.score_sum / self.scores) ** 2 if self.scores >= 2 else None
        var = PRIOR_VAR if spread is None else max(spread, 0.0025)
        return mean, math.sqrt(var / weight)

    def mean(self) -> float:
        """Expected quality: the success rate's mean times the score's."""
        a, b = self.success_params()
        return a / (a + b) * self.score_params()[0]

    def interval(self, draws: int = 400, *, seed: int = 0) -> tuple[float, float]:
        """A 95% interval of the quality (sampled: the product of the two posteriors)."""
        rng = random.Random(seed)
        (a, b), (mu, sd) = self.success_params(), self.score_params()
        values = sorted(rng.betavariate(a, b) * min(1.0, max(0.0, rng.gauss(mu, sd))) for _ in range(draws))
        return values[int(draws * 0.025)], values[int(draws * 0.975) - 1]


class ModelQuality(BaseModel):
    model: str
    evidence: Evidence
    mean: float = Field(ge=0, le=1, description="Expected quality (success rate x mean score).")
    low: float = Field(ge=0, le=1, description="95% interval of the quality, low end.")
    high: float = Field(ge=0, le=1)
    share: float = Field(ge=0, le=1, description="Its share of the class's recent answers (decayed).")
    excluded: bool = Field(default=False, description="Below the route's floor with enough evidence: not chosen.")


class ClassQuality(BaseModel):
    name: str = Field(description="The class: task/length bucket[/tenant].")
    models: list[ModelQuality]


class RouteQuality(Report):
    """``/<ns>/v1/quality/<route>``: the posterior the routers sample from (the monitor's leader
    writes it, fenced, when it moved and at most every few seconds)."""

    route: str
    updated_at: float = Field(description="Unix time the evidence was decayed to.")
    classes: list[ClassQuality] = Field(default_factory=list)


class RouteQualityReport(RouteQuality):
    """``GET /api/v1/routes/{name}/quality``."""

    strategy: str = Field(description="The route's strategy (the posterior is learned only for 'quality').")
    enabled: bool = Field(description="False: the guardrails (or an operator) turned the strategy off.")
    floor: float | None = None
    published_at: float | None = Field(default=None, description="When the routers' copy was last written (None: never).")
