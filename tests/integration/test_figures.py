"""The live figures over real SQLite and PostgreSQL databases: SQL aggregates and streamed percentile passes give
exactly what the raw samples say, and concurrent viewers of one window share one computation."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from controlplane.db.engine import make_engine, migrate
from controlplane.db.models import Feedback, OutcomeSample
from controlplane.services import figures as figures_module
from controlplane.services.figures import Figures, percentile, summary


def _fill(db: str, n: int, rng: random.Random, now: float) -> list[dict[str, object]]:
    engine = make_engine(db)
    migrate(engine)
    rows = []
    for i in range(n):
        status = rng.choices(["ok", "error", "cancelled"], weights=[85, 10, 5])[0]
        rows.append({
            "key": f"k{i}", "at": now - rng.uniform(0, 1200), "request_id": f"r{i}", "route": "", "node": "n0", "variant": "",
            "model": rng.choice(["small", "big", "coder"]), "status": status, "total_ms": round(rng.uniform(5, 3000), 3),
            "ttft_ms": round(rng.uniform(1, 400), 3), "tokens": 10, "tokens_per_s": rng.choice([None, rng.uniform(10, 90)]),
            "signals": rng.choice([[], [], [], ["truncated"], ["empty", "refusal"]]),
        })  # fmt: skip
    with Session(engine) as session, session.begin():
        session.execute(insert(OutcomeSample), rows)
        session.add_all([Feedback(request_id="r1", submitter="a", at=now - 5, model="small", node="n0", route="", variant="",
                                  score=0.5, thumbs=None, labels=[], comment=""),
                         Feedback(request_id="r2", submitter="a", at=now - 5, model="big", node="n0", route="", variant="",
                                  score=None, thumbs="up", labels=[], comment="")])  # fmt: skip
    engine.dispose()
    return rows


def _reference(rows: list[dict[str, object]]) -> dict[str, object]:
    total = sorted(float(r["total_ms"]) for r in rows)  # type: ignore[arg-type]
    ttft = sorted(float(r["ttft_ms"]) for r in rows if r["status"] == "ok")  # type: ignore[arg-type]
    return {
        "requests": len(rows),
        "errors": sum(1 for r in rows if r["status"] == "error"),
        "latency_ms": {f"p{p}": round(percentile(total, p), 2) if total else None for p in (50, 95, 99)},  # type: ignore[arg-type]
        "ttft_ms": {f"p{p}": round(percentile(ttft, p), 2) if ttft else None for p in (50, 95, 99)},  # type: ignore[arg-type]
    }


def test_summary_is_exact_per_model_and_for_the_fleet(sql_url: str) -> None:
    """On SQLite and PostgreSQL alike (the percentile ranking is SQL both run)."""
    db, now = sql_url, time.time()
    rows = _fill(db, 5000, random.Random(7), now)
    got = summary(make_engine(db), window_s=600, now=now)
    recent = [r for r in rows if float(r["at"]) >= now - 600]  # type: ignore[arg-type]
    for name, part in [("fleet", recent)] + [(m, [r for r in recent if r["model"] == m]) for m in ("big", "coder", "small")]:
        figures = got["fleet"] if name == "fleet" else got["models"][name]
        want = _reference(part)
        assert {k: figures[k] for k in want} == want, name
    assert got["models"]["small"]["feedback"] == {"count": 1, "mean_score": 0.5}
    assert got["fleet"]["feedback"] == {"count": 2, "mean_score": 0.75}
    assert got["fleet"]["signals"]["truncated"] == sum(1 for r in recent if r["signals"] == ["truncated"])
    rates = [float(r["tokens_per_s"]) for r in recent if r["tokens_per_s"]]  # type: ignore[arg-type]
    assert got["fleet"]["tokens_per_s"] == round(sum(rates) / len(rates), 2)
    one = summary(make_engine(db), window_s=600, model="big", now=now)
    assert list(one["models"]) == ["big"] and one["fleet"]["latency_ms"] == got["models"]["big"]["latency_ms"]
    empty = summary(make_engine(db), window_s=600, model="nobody", now=now)
    assert empty["fleet"]["requests"] == 0 and empty["fleet"]["latency_ms"] == {"p50": None, "p95": None, "p99": None}


@pytest.mark.asyncio
async def test_viewers_of_one_window_share_one_computation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'm.db'}"
    _fill(db, 200, random.Random(1), time.time())
    calls = []
    real = figures_module.summary

    def counted(*args: object, **kwargs: object) -> dict[str, object]:
        calls.append(kwargs)
        time.sleep(0.2)  # a slow computation: everyone arriving meanwhile waits for it
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(figures_module, "summary", counted)
    figures = Figures(make_engine(db), keep_samples_s=86_400)
    answers = await asyncio.gather(*(figures.shared(window_s=900, max_age_s=5) for _ in range(50)))
    assert len(calls) == 1 and all(a is answers[0] for a in answers)
    await figures.shared(window_s=900, max_age_s=5)  # fresh enough: no new computation
    await figures.shared(window_s=900, model="big", max_age_s=5)  # another filter: its own
    assert len(calls) == 2
