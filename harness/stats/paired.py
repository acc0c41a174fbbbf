"""Paired comparison of two methods from per-example values on shared seeds and examples.

Estimand: the expected difference E[a - b] over training seeds *and* over the test
distribution the examples were drawn from (the "method-level" difference a paper claims).
A per-example difference d[s, i] = a[s, i] - b[s, i] is modelled as crossed random effects,
d = mu + seed_s + example_i + residual_si, and the variance of its grand mean is estimated
from the two-way ANOVA mean squares (no replication):

    Var(mean d) = (MS_seed + MS_example - MS_residual) / (S * N)

with Satterthwaite's degrees of freedom for that linear combination. Both sources count
once: plain Student's t over per-seed means ignores that the examples are shared (and calls
per-example differences significant, ~30% false positives at 10 seeds in the statistics
issue's simulation); adding each seed's example variance to it counts the examples twice.
With one seed the comparison is between two trained *models*, not two methods: a paired t
over examples, labelled "model-level (1 seed)".

Written here: neither scipy nor statsmodels has a crossed two-way random-effects interval for
a grand mean; the mean squares are four lines of numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

VERDICTS = ("better", "worse", "not distinguishable")


@dataclass(frozen=True)
class PairedDifference:
    """mean a - b, its (unadjusted) interval, the two-sided p-value of 'no difference', the
    verdict at `confidence`, the interval's method and the level of the comparison."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    verdict: str
    interval: str
    level: str
    seeds: int
    examples: int


def paired_difference(
    a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95
) -> PairedDifference:
    """Difference of method a minus method b from (seeds, examples) arrays of per-example
    values (e.g. 0/1 correctness) on the same seeds and the same examples, row s of both
    from seed s. The verdict is better / worse when the p-value is below 1 - confidence."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim == 1:
        a, b = a[None, :], b[None, :]
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"paired_difference: a and b must be (seeds, examples) arrays of one shape; "
            f"got {a.shape} and {b.shape}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"paired_difference: confidence must be in (0, 1), got {confidence}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_difference: a and b must be finite (a NaN or inf value)")
    seeds, examples = a.shape
    if examples < 2:
        raise ValueError(f"paired_difference: needs at least 2 examples, got {examples}")
    d = a - b
    mean = float(d.mean())
    if seeds == 1:
        variance, df = float(d.var(ddof=1)) / examples, examples - 1.0
        interval, level = "paired t over examples", "model-level (1 seed)"
    else:
        variance, df = _crossed_variance(d)
        interval = "crossed seeds × examples, Satterthwaite t"
        level = f"method-level ({seeds} seeds)"
    se = float(np.sqrt(max(variance, 0.0)))
    if se == 0.0:  # every pair differs by the same amount: no uncertainty left to test
        p = 1.0 if mean == 0.0 else 0.0
        low = high = mean
    else:
        p = float(2 * _scipy_stats.t.sf(abs(mean) / se, df))
        half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, df)) * se
        low, high = mean - half, mean + half
    verdict = VERDICTS[2] if p >= 1 - confidence else VERDICTS[0] if mean > 0 else VERDICTS[1]
    return PairedDifference(
        mean, low, high, p, float(df), verdict, interval, level, seeds, examples
    )


def _crossed_variance(d: np.ndarray) -> tuple[float, float]:
    """Variance of the grand mean of d (seeds × examples) under crossed random effects and
    its Satterthwaite degrees of freedom. When the combination falls below one of its
    mean squares (a negative variance component estimated), that mean square alone is
    used: never below what the seed or example spread alone implies."""
    s, n = d.shape
    grand = d.mean()
    seed_means, example_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = n * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    ms_example = s * float(((example_means - grand) ** 2).sum()) / (n - 1)
    residual = d - seed_means[:, None] - example_means[None, :] + grand
    ms_residual = float((residual**2).sum()) / ((s - 1) * (n - 1))
    terms = [(ms_seed, s - 1.0), (ms_example, n - 1.0), (-ms_residual, (s - 1.0) * (n - 1.0))]
    combined = ms_seed + ms_example - ms_residual
    if combined < max(ms_seed, ms_example):
        terms = [max((ms_seed, s - 1.0), (ms_example, n - 1.0))]
        if ms_example > ms_seed and s > 2:
            # the seed component estimated negative: with few seeds that estimate is noise,
            # and the example mean square alone (df ~ N) made 1 in 3 of these draws a false
            # positive at 3 seeds (7% overall). Keep a share 2/S of MS_seed, which vanishes
            # as seeds grow (simulated against 1/(S-1) and 1: docs/statistics.md,
            # "small-sample guard"); 2 seeds keep their conservative rule below.
            terms = [(ms_example, n - 1.0), (2.0 * ms_seed / s, s - 1.0)]
        combined = sum(ms for ms, _ in terms)
    denominator = sum(ms**2 / df for ms, df in terms)
    df = combined**2 / denominator if denominator > 0 else float(s - 1)
    # Satterthwaite's df trusts the seed mean square's estimate, which 2 seeds cannot give
    # (measured: 10-12% false positives at 2 seeds): there, the seeds' one df (conservative).
    return combined / (s * n), (1.0 if s == 2 else df)


def adjust_p_values(p_values: np.ndarray, method: str) -> np.ndarray:
    """p-values adjusted for a family of comparisons: 'holm' (family-wise error, Holm's
    step-down), 'bh' (false discovery rate, Benjamini-Hochberg, from scipy) or 'none'.
    Holm is written here: scipy has only BH, and statsmodels is not a dependency."""
    p = np.asarray(p_values, dtype=float)
    if method == "none" or len(p) == 0:
        return p.copy()
    if method == "bh":
        return _scipy_stats.false_discovery_control(p, method="bh")
    if method == "holm":
        order = np.argsort(p, kind="stable")
        scaled = np.minimum(1.0, p[order] * (len(p) - np.arange(len(p))))
        adjusted = np.empty_like(p)
        adjusted[order] = np.maximum.accumulate(scaled)
        return adjusted
    raise ValueError(f"multiple_comparisons: unknown adjustment {method!r}; use holm, bh or none")
