"""Paired comparison of two methods from per-example values on shared seeds and examples.

Estimand: the expected difference E[a - b] over training seeds *and* over the test
distribution the examples were drawn from (the "method-level" difference a paper claims).
A per-example difference d[s, i] = a[s, i] - b[s, i] is modelled as crossed random effects,
d = mu + seed_s + example_i + residual_si, and the variance of its grand mean is estimated
from the two-way ANOVA mean squares (no replication):

    Var(mean d) = (MS_seed + MS_example - MS_residual) / (S * N)

with Satterthwaite's degrees of freedom for that linear combination (see _crossed_variance
for the guards on the df). Both sources count
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
    its Satterthwaite degrees of freedom.

    The variance is the unbiased combination MS_seed + MS_example - MS_residual, with no
    mean square truncated or swapped for another on what the data happen to show:
    - the example part (MS_example - MS_residual) is not cut at 0: with no example effect
      it is zero-mean noise, and its positive part is a bias that is large beside a small
      seed mean square (with ceiling accuracies most examples are right on every seed and
      MS_example is far noisier than its N - 1 df say: 0.028 false positives at 3 seeds);
    - the seed mean square is never replaced by MS_example when it falls below MS_residual
      (the rule before: the draws whose seeds happened to agree got a narrow interval and
      those whose seeds disagreed a wide one, 7% false positives at 3 seeds, and a guard
      tuned on one null that left the ceiling null at 0.028).
    Satterthwaite's df plugs the estimated mean squares in; when MS_seed fell below
    MS_residual, its lower bound under the model (E MS_seed >= E MS_residual), the plug-in
    df claims many df exactly where the seed variance was underestimated (measured: 7% false
    positives at 3 seeds with per-example differences), so the df uses that bound for the
    seed term and is never below S - 1, the seed mean square's own df. A combination <= 0
    (MS_seed + MS_example < MS_residual, rare) falls back to Student's t over seed means.
    Simulated: docs/statistics.md, benchmarks/stats_simulation.py."""
    s, n = d.shape
    grand = d.mean()
    seed_means, example_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = n * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    ms_example = s * float(((example_means - grand) ** 2).sum()) / (n - 1)
    residual = d - seed_means[:, None] - example_means[None, :] + grand
    ms_residual = float((residual**2).sum()) / ((s - 1) * (n - 1))
    combined = ms_seed + ms_example - ms_residual
    if combined <= 0:
        combined, df = ms_seed, s - 1.0
    else:
        denominator = (
            max(ms_seed, ms_residual) ** 2 / (s - 1)
            + ms_example**2 / (n - 1)
            + ms_residual**2 / ((s - 1) * (n - 1))
        )
        df = max(combined**2 / denominator, s - 1.0) if denominator > 0 else s - 1.0
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
