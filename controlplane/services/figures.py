"""Live figures for operators and the UI: fleet-wide and per-model request counts, error rates,
latency and time-to-first-token percentiles, tokens per second, quality signals and feedback over
a recent window. Percentiles are exact: they come from the raw samples (kept for a day)."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from controlplane.db.models import Feedback, OutcomeSample
from controlplane.services.errors import BadRequest


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def _figures(rows: Sequence[Any], feedback: Sequence[Any]) -> dict[str, Any]:
    total = [r.total_ms for r in rows]
    ttft = [r.ttft_ms for r in rows if r.status == "ok"]
    total.sort()
    ttft.sort()
    statuses = Counter(r.status for r in rows)
    rates = [r.tokens_per_s for r in rows if r.tokens_per_s]
    signals: Counter[str] = Counter(name for r in rows for name in r.signals)
    scores = [f.score if f.score is not None else (1.0 if f.thumbs == "up" else 0.0) for f in feedback]
    n = len(rows)
    return {
        "requests": n,
        "ok": statuses["ok"],
        "errors": statuses["error"],
        "cancelled": statuses["cancelled"],
        "error_rate": round(statuses["error"] / n, 4) if n else None,
        "latency_ms": {f"p{p}": _round(percentile(total, p)) for p in (50, 95, 99)},
        "ttft_ms": {f"p{p}": _round(percentile(ttft, p)) for p in (50, 95, 99)},
        "tokens_per_s": round(sum(rates) / len(rates), 2) if rates else None,
        "signals": dict(signals),
        "feedback": {"count": len(scores), "mean_score": round(sum(scores) / len(scores), 4) if scores else None},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def summary(engine: Engine, *, window_s: float, model: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Figures over the last ``window_s`` seconds: the fleet's, and each model's (one model's only
    when ``model`` is given)."""
    since = (now or time.time()) - window_s
    with Session(engine) as session:
        query = select(OutcomeSample).where(OutcomeSample.at >= since)
        votes = select(Feedback).where(Feedback.at >= since)
        if model is not None:
            query, votes = query.where(OutcomeSample.model == model), votes.where(Feedback.model == model)
        rows, feedback = list(session.scalars(query)), list(session.scalars(votes))
    by_model: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_model[row.model].append(row)
    votes_by_model: dict[str, list[Any]] = defaultdict(list)
    for vote in feedback:
        votes_by_model[vote.model].append(vote)
    return {
        "window_s": window_s,
        "since": since,
        "fleet": _figures(rows, feedback),
        "models": {name: _figures(by_model[name], votes_by_model[name]) for name in sorted(by_model)},
    }


class Figures:
    """The summary over the monitor's database, within the raw samples' retention."""

    def __init__(self, engine: Engine, *, keep_samples_s: float) -> None:
        self._engine, self.keep_s = engine, keep_samples_s

    def summary(self, *, window_s: float, model: str | None = None) -> dict[str, Any]:
        if window_s > self.keep_s:
            raise BadRequest(f"a window of {window_s:g} s is longer than the raw samples are kept ({self.keep_s / 3600:g} h)")
        return summary(self._engine, window_s=window_s, model=model)
