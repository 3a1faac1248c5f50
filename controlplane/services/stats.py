"""The statistics of A/B experiments, in the standard library (pure functions; checked against SciPy
in tests/unit/test_stats.py): Welch's t-test for means, the two-proportion z-test for rates, the
Bayesian probability of being best (Beta posteriors), confidence intervals, and a plain-language
verdict. SciPy would bring ~40 MB to the control plane for three distributions."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    t2 = t * t
    # Near 0, df / (df + t²) rounds to 1, so the complement keeps the digits there; far out,
    # taking 1 - I would cancel the small tail away.
    near = t2 < df
    tail = 0.5 * (1.0 - betainc(0.5, df / 2, t2 / (df + t2))) if near else 0.5 * betainc(df / 2, 0.5, df / (df + t2))
    return tail if t >= 0 else 1.0 - tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on the CDF; q in (0, 1))."""
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        if 1.0 - t_sf(mid, df) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    mean: float
    variance: float  # sample variance (n - 1)

    @staticmethod
    def of(values: Sequence[float]) -> Summary:
        n = len(values)
        mean = sum(values) / n if n else 0.0
        variance = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return Summary(n, mean, variance)

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """The t-based confidence interval of the mean."""
        if self.n < 2:
            return (math.nan, math.nan)
        half = t_ppf(0.5 + confidence / 2, self.n - 1) * math.sqrt(self.variance / self.n)
        return (self.mean - half, self.mean + half)


@dataclass(frozen=True, slots=True)
class TestResult:
    test: str
    statistic: float
    p_value: float
    difference: float  # b - a


def welch(a: Summary, b: Summary) -> TestResult:
    """Welch's unequal-variances t-test of b's mean against a's (two-sided)."""
    if a.n < 2 or b.n < 2:
        return TestResult("welch_t", 0.0, 1.0, b.mean - a.mean)
    se2 = a.variance / a.n + b.variance / b.n
    if se2 == 0:
        return TestResult("welch_t", 0.0, 1.0, b.mean - a.mean)
    t = (b.mean - a.mean) / math.sqrt(se2)
    df = se2**2 / ((a.variance / a.n) ** 2 / (a.n - 1) + (b.variance / b.n) ** 2 / (b.n - 1))
    return TestResult("welch_t", t, min(1.0, 2 * t_sf(abs(t), df)), b.mean - a.mean)


def two_proportions(successes_a: int, n_a: int, successes_b: int, n_b: int) -> TestResult:
    """The two-proportion z-test of b's rate against a's (pooled standard error, two-sided)."""
    if n_a == 0 or n_b == 0:
        return TestResult("two_proportion_z", 0.0, 1.0, 0.0)
    pa, pb = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return TestResult("two_proportion_z", 0.0, 1.0, pb - pa)
    z = (pb - pa) / se
    return TestResult("two_proportion_z", z, min(1.0, 2 * (1 - _NORMAL.cdf(abs(z)))), pb - pa)


def rate_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a rate."""
    if n == 0:
        return (math.nan, math.nan)
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def probability_best(successes: Sequence[int], trials: Sequence[int], *, draws: int = 20_000, seed: int = 7) -> list[float]:
    """Each variant's probability of having the highest rate, under Beta(1 + s, 1 + f) posteriors
    (Monte Carlo with a fixed seed, so the same data gives the same answer)."""
    rng = random.Random(seed)
    wins = [0] * len(trials)
    for _ in range(draws):
        samples = [rng.betavariate(1 + s, 1 + n - s) for s, n in zip(successes, trials, strict=True)]
        wins[max(range(len(samples)), key=samples.__getitem__)] += 1
    return [w / draws for w in wins]


def verdict(result: TestResult, *, metric: str, lower_is_better: bool, alpha: float = 0.05, baseline: str, other: str) -> str:
    """A sentence a person can act on."""
    if result.p_value >= alpha:
        return (f"No significant difference in {metric} between {other} and {baseline} "
                f"(p = {result.p_value:.3g}, {result.test}); keep collecting data or stop the experiment.")  # fmt: skip
    better = (result.difference < 0) == lower_is_better
    word = "better" if better else "worse"
    return (f"{other} is significantly {word} than {baseline} on {metric} (difference {result.difference:+.4g}, "
            f"p = {result.p_value:.3g}, {result.test}).")  # fmt: skip
