"""The experiment statistics (controlplane/services/stats.py) against SciPy on fixed data, and the
verdicts: "not significant" for identical variants, a planted difference found."""

from __future__ import annotations

import random

import pytest
from scipy import integrate, stats

from controlplane.services.stats import (
    Summary,
    probability_best,
    rate_interval,
    t_ppf,
    t_sf,
    two_proportions,
    verdict,
    welch,
)

RNG = random.Random(20261127)
A = [RNG.gauss(100, 15) for _ in range(40)]
B = [RNG.gauss(112, 25) for _ in range(55)]


def test_student_t_matches_scipy() -> None:
    for t, df in [(0.0, 3), (2.1, 7.3), (-1.7, 30), (4.5, 2.2), (1.96, 1000)]:
        assert t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-9, abs=1e-12)
    for q, df in [(0.975, 12), (0.95, 4.5), (0.5, 9), (0.995, 60)]:
        assert t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-9)


def test_welch_and_interval_match_scipy() -> None:
    ours, theirs = welch(Summary.of(A), Summary.of(B)), stats.ttest_ind(B, A, equal_var=False)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    low, high = Summary.of(A).interval(0.95)
    ref = stats.t.interval(0.95, len(A) - 1, loc=sum(A) / len(A), scale=stats.sem(A))
    assert (low, high) == pytest.approx(ref, rel=1e-9)


def test_two_proportions_and_wilson_match_scipy() -> None:
    ours = two_proportions(420, 500, 455, 500)
    pooled = (420 + 455) / 1000
    z = (455 / 500 - 420 / 500) / (pooled * (1 - pooled) * (2 / 500)) ** 0.5
    assert ours.statistic == pytest.approx(z, rel=1e-12)
    assert ours.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    ci = stats.binomtest(420, 500).proportion_ci(confidence_level=0.95, method="wilson")
    assert rate_interval(420, 500) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_probability_best_matches_the_integral() -> None:
    a, b = stats.beta(1 + 90, 1 + 10), stats.beta(1 + 80, 1 + 20)
    exact, _ = integrate.quad(lambda x: a.pdf(x) * b.cdf(x), 0, 1)  # P(rate_a > rate_b)
    best = probability_best([90, 80], [100, 100])
    assert best[0] == pytest.approx(exact, abs=0.01) and sum(best) == pytest.approx(1.0)
    assert probability_best([90, 80], [100, 100]) == best  # seeded: the same data, the same answer


def test_verdicts() -> None:
    same = [RNG.gauss(200, 30) for _ in range(300)]
    other = [RNG.gauss(200, 30) for _ in range(300)]
    flat = verdict(welch(Summary.of(same), Summary.of(other)), metric="latency", lower_is_better=True, baseline="a", other="b")
    assert flat.startswith("No significant difference in latency")
    slower = [x + 25 for x in other]  # planted: b is 25 ms slower
    found = verdict(welch(Summary.of(same), Summary.of(slower)), metric="latency", lower_is_better=True, baseline="a", other="b")
    assert found.startswith("b is significantly worse than a on latency")
    rates = verdict(two_proportions(900, 1000, 950, 1000), metric="success rate", lower_is_better=False, baseline="a", other="b")
    assert rates.startswith("b is significantly better than a on success rate")


def test_too_little_data_is_never_significant() -> None:
    assert welch(Summary.of([]), Summary.of([1.0, 2.0])).p_value == 1.0
    assert welch(Summary.of([3.0, 3.0]), Summary.of([3.0, 3.0])).p_value == 1.0
    assert two_proportions(0, 0, 5, 10).p_value == 1.0 and two_proportions(10, 10, 10, 10).p_value == 1.0
