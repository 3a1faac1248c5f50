"""Live figures for operators and the UI: fleet-wide and per-model request counts, error rates,
latency and time-to-first-token percentiles, tokens per second, quality signals and feedback over
a recent window. Percentiles are exact: they come from the raw samples (kept for a day).

The database does the work: the window's samples are copied once into a temporary table, counts,
sums and feedback are SQL aggregates, and percentiles are ranked by the database (a window
function), which returns three rows per model; the samples never come into Python.
``Figures.shared`` computes a (window, model) summary once for every caller that asks within
``max_age_s``, and never more often than twice as long as the last computation took (one
computation behind every live stream showing it), in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Engine, case, func, select, text
from sqlalchemy.orm import Session

from controlplane.db.models import Feedback
from controlplane.services.errors import BadRequest, TooManyStreams

PERCENTILES = (50, 95, 99)


def rank(n: int, p: float) -> int:
    """The 0-based position of the nearest-rank ``p``th percentile among ``n`` sorted values."""
    return min(n - 1, max(0, math.ceil(p / 100 * n) - 1))


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    return ordered[rank(len(ordered), p)] if ordered else None


def _empty() -> dict[str, float | None]:
    return {f"p{p}": None for p in PERCENTILES}


def _figures(counts: Counter[str], rate: tuple[float, int], signals: Counter[str], votes: tuple[int, float],
             latency: dict[str, float | None], ttft: dict[str, float | None]) -> dict[str, Any]:  # fmt: skip
    n = sum(counts.values())
    return {
        "requests": n,
        "ok": counts["ok"],
        "errors": counts["error"],
        "cancelled": counts["cancelled"],
        "error_rate": round(counts["error"] / n, 4) if n else None,
        "latency_ms": latency,
        "ttft_ms": ttft,
        "tokens_per_s": round(rate[0] / rate[1], 2) if rate[1] else None,
        "signals": dict(signals),
        "feedback": {"count": votes[0], "mean_score": round(votes[1] / votes[0], 4) if votes[0] else None},
    }


#: The window's samples, copied once into a temporary table (one range scan of the samples; every
#: figure below reads this instead, which halved the time at a million samples on SQLite).
_WINDOW = "figures_window"
_COPY = (
    f"CREATE TEMPORARY TABLE {_WINDOW} AS SELECT model, status, total_ms, ttft_ms, tokens_per_s, signals "
    "FROM outcome_samples WHERE at >= :since"
)
_COUNTS = (
    f"SELECT model, status, COUNT(*), SUM(CASE WHEN tokens_per_s > 0 THEN tokens_per_s END), "
    f"COUNT(CASE WHEN tokens_per_s > 0 THEN 1 END) FROM {_WINDOW} GROUP BY model, status"
)
_SIGNALS = f"SELECT model, signals FROM {_WINDOW} WHERE CAST(signals AS VARCHAR) != '[]'"
#: Nearest-rank percentiles, by model (or over everything: ``{group}`` a constant), ranked by the
#: database: only three rows per group come back. ``(p * n + 99) / 100`` is ceil(p / 100 * n) in
#: integer arithmetic (SQLite and PostgreSQL alike). Column and filter texts are ours, never input.
_RANKED = f"""
SELECT grp, rn, value FROM (
  SELECT {{group}} AS grp, {{column}} AS value,
         ROW_NUMBER() OVER (PARTITION BY {{group}} ORDER BY {{column}}) AS rn,
         COUNT(*) OVER (PARTITION BY {{group}}) AS n
  FROM {_WINDOW} {{where}}
) ranked
WHERE rn IN ((50 * n + 99) / 100, (95 * n + 99) / 100, (99 * n + 99) / 100)
"""


def _percentiles(session: Session, column: str, *, ok_only: bool, by_model: bool,
                 counts: dict[str, int]) -> dict[str, dict[str, float | None]]:  # fmt: skip
    sql = _RANKED.format(group="model" if by_model else "''", column=column, where="WHERE status = 'ok'" if ok_only else "")
    out: dict[str, dict[str, float | None]] = {}
    for grp, position, value in session.execute(text(sql)):
        n = counts.get(grp, 0)
        for p in PERCENTILES:
            if n and rank(n, p) + 1 == position:
                out.setdefault(grp, _empty())[f"p{p}"] = round(float(value), 2)
    return out


def _marks(value: Any) -> list[str]:
    """A samples' ``signals`` as the copy gives it: JSON text (SQLite) or already a list (PostgreSQL)."""
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    return [str(v) for v in value] if isinstance(value, list) else []


def summary(engine: Engine, *, window_s: float, model: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Figures over the last ``window_s`` seconds: the fleet's, and each model's (one model's only
    when ``model`` is given)."""
    since = (now or time.time()) - window_s
    F = Feedback
    voted = [F.at >= since] + ([F.model == model] if model is not None else [])
    score = case((F.score.is_not(None), F.score), (F.thumbs == "up", 1.0), else_=0.0)
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    rate_parts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    signals: dict[str, Counter[str]] = defaultdict(Counter)
    with Session(engine) as session, session.begin():
        session.execute(text(f"DROP TABLE IF EXISTS {_WINDOW}"))  # a pooled connection's leftover, if any
        copy = _COPY + (" AND model = :model" if model is not None else "")
        session.execute(text(copy), {"since": since} | ({"model": model} if model is not None else {}))
        try:
            for name, status, count, rate_sum, rate_n in session.execute(text(_COUNTS)):
                statuses[name][status] = count
                rate_parts[name][0] += float(rate_sum or 0)
                rate_parts[name][1] += int(rate_n or 0)
            for name, marks in session.execute(text(_SIGNALS)):
                signals[name].update(_marks(marks))
            totals = {name: sum(c.values()) for name, c in statuses.items()}
            oks = {name: c["ok"] for name, c in statuses.items()}
            ranked = functools.partial(_percentiles, session)
            latency = ranked("total_ms", ok_only=False, by_model=True, counts=totals)
            ttft = ranked("ttft_ms", ok_only=True, by_model=True, counts=oks)
            if len(statuses) > 1:  # the fleet's own order; with one model it is that model's
                fleet_latency = ranked("total_ms", ok_only=False, by_model=False, counts={"": sum(totals.values())})
                fleet_ttft = ranked("ttft_ms", ok_only=True, by_model=False, counts={"": sum(oks.values())})
                fleet_latency_p, fleet_ttft_p = fleet_latency.get("", _empty()), fleet_ttft.get("", _empty())
            else:
                only = next(iter(statuses), "")
                fleet_latency_p, fleet_ttft_p = latency.get(only, _empty()), ttft.get(only, _empty())
        finally:
            session.execute(text(f"DROP TABLE IF EXISTS {_WINDOW}"))
        votes = {name: (int(n), float(total or 0)) for name, n, total in session.execute(
            select(F.model, func.count(), func.sum(score)).where(*voted).group_by(F.model)
        )}  # fmt: skip
    rates = {name: (total, int(n)) for name, (total, n) in rate_parts.items()}
    fleet_counts: Counter[str] = sum(statuses.values(), Counter())
    fleet_rate = (sum(r[0] for r in rates.values()), sum(r[1] for r in rates.values()))
    fleet_votes = (sum(v[0] for v in votes.values()), sum(v[1] for v in votes.values()))
    return {
        "window_s": window_s,
        "since": since,
        "fleet": _figures(fleet_counts, fleet_rate, sum(signals.values(), Counter()), fleet_votes, fleet_latency_p, fleet_ttft_p),
        "models": {
            name: _figures(statuses[name], rates.get(name, (0.0, 0)), signals[name], votes.get(name, (0, 0.0)),
                           latency.get(name, _empty()), ttft.get(name, _empty()))
            for name in sorted(statuses)
        },
    }


class Figures:
    """The summary over the monitor's database, within the raw samples' retention."""

    def __init__(self, engine: Engine, *, keep_samples_s: float, max_streams: int = 32) -> None:
        self._engine, self.keep_s, self.max_streams = engine, keep_samples_s, max_streams
        self.streams = 0  # live streams open now
        self._latest: dict[tuple[float, str | None], tuple[float, float, dict[str, Any]]] = {}  # at, took, result
        self._running: dict[tuple[float, str | None], asyncio.Future[dict[str, Any]]] = {}

    def check_streams(self) -> None:
        """TooManyStreams (503) when every live-stream slot is taken; a stream counts itself in
        ``streams`` while it runs."""
        if self.streams >= self.max_streams:
            raise TooManyStreams(
                f"{self.streams} live metrics streams are open, the most this control plane serves "
                "(api.max_metric_streams); retry later, or poll /api/v1/metrics/summary"
            )

    def check(self, window_s: float) -> None:
        """BadRequest (400) for a window the samples do not cover."""
        if window_s > self.keep_s:
            raise BadRequest(f"a window of {window_s:g} s is longer than the raw samples are kept ({self.keep_s / 3600:g} h)")

    def summary(self, *, window_s: float, model: str | None = None) -> dict[str, Any]:
        self.check(window_s)
        return summary(self._engine, window_s=window_s, model=model)

    async def shared(self, *, window_s: float, model: str | None = None, max_age_s: float = 1.0) -> dict[str, Any]:
        """The summary, computed at most once per ``max_age_s`` for everyone asking for the same
        window and model, in a worker thread; callers arriving while it runs wait for that run."""
        self.check(window_s)
        key = (window_s, model)
        latest = self._latest.get(key)
        if latest is not None and time.monotonic() - latest[0] < max(max_age_s, 2 * latest[1]):
            return latest[2]  # fresh enough; and the database is never kept busy more than half the time
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(self._compute(key))
        return await asyncio.shield(running)  # one caller leaving does not cancel it for the others

    async def _compute(self, key: tuple[float, str | None]) -> dict[str, Any]:
        try:
            started = time.monotonic()
            result = await asyncio.to_thread(summary, self._engine, window_s=key[0], model=key[1])
            self._latest[key] = (time.monotonic(), time.monotonic() - started, result)
            if len(self._latest) > 64:  # bounded: drop the oldest entries
                for old in sorted(self._latest, key=lambda k: self._latest[k][0])[:16]:
                    self._latest.pop(old, None)
            return result
        finally:
            self._running.pop(key, None)
