"""Experiments: results, stop, promote, guardrails.

Results come from the monitor's raw samples and the feedback on them. Per variant: counts,
success rate, latency and feedback score with confidence intervals. Each variant is compared
with the first (the baseline) on the experiment's primary metric, with the test used, its
p-value and a verdict; then the probability of being best, and whether a guardrail is breached."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from controlplane.db.models import Feedback, OutcomeSample
from controlplane.services.config import ConfigService
from controlplane.services.errors import BadRequest, NotFound, StaleRevision
from controlplane.services.figures import percentile
from controlplane.services.stats import Summary, TestResult, probability_best, rate_interval, two_proportions, verdict, welch
from controlplane.store.leases import Fence
from controlplane.store.view import ConfigView
from schemas.experiment import Experiment, ExperimentState, Metric
from schemas.route import Route, RouteTarget


def _interval(pair: tuple[float, float]) -> list[float | None]:
    return [None if math.isnan(x) else round(x, 6) for x in pair]


class ExperimentResults:
    def __init__(self, engine: Engine, view: ConfigView) -> None:
        self._engine, self._view = engine, view

    def experiment(self, name: str) -> Experiment:
        found = self._view.get("experiments", name, Experiment)
        if found is None:
            raise NotFound("experiments", name)
        return found

    def route(self, name: str) -> Route:
        found = self._view.get("routes", name, Route)
        if found is None:
            raise NotFound("routes", name)
        return found

    def running(self) -> list[Experiment]:
        found = (self._view.get(kind, n, Experiment) for kind, n in self._view.state if kind == "experiments")
        return sorted((e for e in found if e is not None and e.spec.state is ExperimentState.RUNNING), key=lambda e: e.name)

    def results(self, name: str) -> dict[str, Any]:
        exp = self.experiment(name)
        names = [v.name for v in exp.spec.variants]
        with Session(self._engine) as session:
            samples = session.execute(
                select(OutcomeSample.variant, OutcomeSample.status, OutcomeSample.total_ms, OutcomeSample.model).where(
                    OutcomeSample.route == exp.spec.route, OutcomeSample.variant.in_(names))
            ).all()  # fmt: skip
            votes = session.execute(
                select(Feedback.variant, Feedback.score, Feedback.thumbs).where(
                    Feedback.route == exp.spec.route, Feedback.variant.in_(names))
            ).all()  # fmt: skip
        model_of = {v.name: v.model for v in exp.spec.variants}
        latency: dict[str, list[float]] = defaultdict(list)
        ok: dict[str, int] = defaultdict(int)
        failed: dict[str, int] = defaultdict(int)
        for variant, status, total_ms, model in samples:
            if status == "cancelled":  # the client left: says nothing about the variant
                continue
            # An answer from a fallback model is a failure of the variant: its own model could not serve.
            served = status == "ok" and model == model_of[variant]
            ok[variant] += served
            failed[variant] += not served
            if served:
                latency[variant].append(total_ms)
        scores: dict[str, list[float]] = defaultdict(list)
        for variant, score, thumbs in votes:
            scores[variant].append(score if score is not None else 1.0 if thumbs == "up" else 0.0)
        variants = [self._variant(exp, v, latency[v], ok[v], failed[v], scores[v]) for v in names]
        best = probability_best([ok[v] for v in names], [ok[v] + failed[v] for v in names])
        return {
            "experiment": exp.name,
            "route": exp.spec.route,
            "state": exp.spec.state.value,
            "primary_metric": exp.spec.primary_metric.value,
            "variants": variants,
            "comparisons": [self._compare(exp, names[0], v, latency, ok, failed, scores) for v in names[1:]],
            "probability_best": dict(zip(names, best, strict=True)),  # of the highest success rate
        }

    @staticmethod
    def _variant(exp: Experiment, name: str, ms: list[float], ok: int, failed: int, scores: list[float]) -> dict[str, Any]:
        n = ok + failed
        ordered = sorted(ms)
        latency, feedback = Summary.of(ms), Summary.of(scores)
        rails = exp.spec.guardrails
        breached = []
        if n >= rails.min_samples:
            if rails.max_error_rate is not None and failed / n > rails.max_error_rate:
                breached.append(f"error rate {failed / n:.1%} > {rails.max_error_rate:.1%}")
            p95 = percentile(ordered, 95)
            if rails.max_p95_latency_ms is not None and p95 is not None and p95 > rails.max_p95_latency_ms:
                breached.append(f"p95 latency {p95:.0f} ms > {rails.max_p95_latency_ms} ms")
        return {
            "variant": name,
            "requests": n,
            "success_rate": round(ok / n, 6) if n else None,
            "success_rate_ci95": _interval(rate_interval(ok, n)),
            "latency_ms": {
                "mean": round(latency.mean, 3) if n else None,
                "ci95": _interval(latency.interval()),
                **{f"p{p}": percentile(ordered, p) for p in (50, 95, 99)},
            },
            "feedback": {
                "count": feedback.n,
                "mean": round(feedback.mean, 6) if feedback.n else None,
                "ci95": _interval(feedback.interval()),
            },
            "guardrails_breached": breached,
        }

    @staticmethod
    def _compare(exp: Experiment, base: str, other: str, latency: dict[str, list[float]], ok: dict[str, int],
                 failed: dict[str, int], scores: dict[str, list[float]]) -> dict[str, Any]:  # fmt: skip
        metric = exp.spec.primary_metric
        result: TestResult
        if metric is Metric.SUCCESS_RATE:
            result = two_proportions(ok[base], ok[base] + failed[base], ok[other], ok[other] + failed[other])
            words, lower = "success rate", False
        elif metric is Metric.LATENCY:
            result = welch(Summary.of(latency[base]), Summary.of(latency[other]))
            words, lower = "latency", True
        else:
            result = welch(Summary.of(scores[base]), Summary.of(scores[other]))
            words, lower = "feedback score", False
        return {
            "baseline": base, "variant": other, "test": result.test, "statistic": round(result.statistic, 6),
            "p_value": result.p_value, "difference": round(result.difference, 6), "significant": result.p_value < 0.05,
            "verdict": verdict(result, metric=words, lower_is_better=lower, baseline=base, other=other),
        }  # fmt: skip


class ExperimentControl:
    """The experiment writes: stop, promote a winner (route and experiment in one revision), and
    the guardrails that stop a running experiment on their own (run by the monitor's leader)."""

    def __init__(self, config: ConfigService, results: ExperimentResults) -> None:
        self._config, self._results = config, results

    async def _write(
        self, objects: list[Experiment | Route], *, actor: str, message: str, fence: Fence | None = None
    ) -> int:  # fmt: skip
        """One revision, on the condition that none of ``objects`` changed since this view read
        them: a write made from a stale view (the leader's own stop a moment ago, an operator's
        promote) fails with StaleRevision instead of overwriting it; with a leader's ``fence``,
        only while it leads (LeadershipLost)."""
        expected = {(o.plural, o.name): o.metadata.revision or 0 for o in objects}
        return (await self._config.apply(objects, expected=expected, actor=actor, message=message, fence=fence)).revision

    async def stop(self, name: str, *, actor: str, why: str = "", fence: Fence | None = None) -> int:
        exp = self._results.experiment(name)
        if exp.spec.state is not ExperimentState.RUNNING:
            raise BadRequest(f"experiment '{name}' is {exp.spec.state.value}, not running")
        stopped = exp.model_copy(update={"spec": exp.spec.model_copy(update={"state": ExperimentState.STOPPED})})
        return await self._write([stopped], actor=actor, message=why or f"stop experiment {name}", fence=fence)

    async def promote(self, name: str, variant: str, *, actor: str) -> int:
        """The variant's model (and options) become the route's only target, the route leaves the
        experiment and the experiment is completed: one revision."""
        exp = self._results.experiment(name)
        chosen = next((v for v in exp.spec.variants if v.name == variant), None)
        if chosen is None:
            names = ", ".join(v.name for v in exp.spec.variants)
            raise BadRequest(f"experiment '{name}' has no variant '{variant}'; its variants: {names}")
        stored = self._results.route(exp.spec.route)
        target = RouteTarget(model=chosen.model, weight=1, options=chosen.options)
        route = stored.model_copy(update={"spec": stored.spec.model_copy(update={"targets": [target], "experiment": None})})
        done = exp.model_copy(update={"spec": exp.spec.model_copy(update={"state": ExperimentState.COMPLETED})})
        return await self._write([route, done], actor=actor, message=f"promote {variant} of experiment {name}")

    async def _reports(self) -> list[tuple[Experiment, dict[str, Any]]]:
        return [(exp, await asyncio.to_thread(self._results.results, exp.name)) for exp in self._results.running()]

    async def enforce_guardrails(
        self, reports: list[tuple[Experiment, dict[str, Any]]] | None = None, *, fence: Fence | None = None
    ) -> list[str]:  # fmt: skip
        """Stop every running experiment with a variant past a guardrail; what was stopped, and why."""
        stopped = []
        for exp, report in reports if reports is not None else await self._reports():
            breaches = [f"{v['variant']}: {b}" for v in report["variants"] for b in v["guardrails_breached"]]
            if breaches:
                why = f"guardrail: {'; '.join(breaches)}"
                with contextlib.suppress(BadRequest, StaleRevision):  # stopped or changed meanwhile by someone else
                    await self.stop(exp.name, actor="monitor", why=why, fence=fence)
                    stopped.append(f"{exp.name} ({why})")
        return stopped

    async def rebalance(
        self, reports: list[tuple[Experiment, dict[str, Any]]] | None = None, *, fence: Fence | None = None
    ) -> list[str]:  # fmt: skip
        """Bandit mode (Thompson sampling): each running experiment with ``bandit.enabled`` gets
        weights in proportion to each variant's probability of having the best success rate,
        never below ``bandit.min_weight``; written only when a share moves by 5 points or more,
        and only once every variant has ``guardrails.min_samples`` answers."""
        moved = []
        for exp, report in reports if reports is not None else await self._reports():
            if not exp.spec.bandit.enabled or any(v["requests"] < exp.spec.guardrails.min_samples for v in report["variants"]):
                continue
            shares = bandit_shares([report["probability_best"][v.name] for v in exp.spec.variants], exp.spec.bandit.min_weight)
            total = sum(v.weight for v in exp.spec.variants) or 1
            if max(abs(s - v.weight / total) for s, v in zip(shares, exp.spec.variants, strict=True)) < 0.05:
                continue
            pairs = zip(shares, exp.spec.variants, strict=True)
            variants = [v.model_copy(update={"weight": max(1, round(s * 1000))}) for s, v in pairs]
            updated = exp.model_copy(update={"spec": exp.spec.model_copy(update={"variants": variants})})
            why = "bandit: " + ", ".join(f"{v.name} {s:.0%}" for s, v in zip(shares, variants, strict=True))
            with contextlib.suppress(StaleRevision):  # changed meanwhile (stopped, promoted): next tick sees it
                await self._write([updated], actor="monitor", message=why, fence=fence)
                moved.append(f"{exp.name} ({why})")
        return moved

    async def tick(self, fence: Fence | None = None) -> None:
        """What the monitor's leader runs every few seconds: each running experiment's results are
        computed once, for the guardrails first, then for the bandit (which skips what they stopped);
        every write carries the leader's ``fence``."""
        reports = await self._reports()
        stopped = {entry.split(" ", 1)[0] for entry in await self.enforce_guardrails(reports, fence=fence)}
        await self.rebalance([(exp, report) for exp, report in reports if exp.name not in stopped], fence=fence)


def bandit_shares(best: list[float], floor: float) -> list[float]:
    """Traffic shares from probabilities of being best, each at least ``floor``, summing to 1."""
    shares = [max(p, floor) for p in best]
    total = sum(shares)
    shares = [s / total for s in shares]
    for _ in range(len(shares)):  # normalising can push a share back under the floor: lift it and take from the rest
        low = [i for i, s in enumerate(shares) if s < floor - 1e-12]
        if not low:
            break
        spare = sum(s - floor for s in shares if s > floor)
        need = sum(floor - shares[i] for i in low)
        shares = [floor if s <= floor else s - (s - floor) / spare * need for s in shares]
    return shares
