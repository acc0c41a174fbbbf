"""Paired comparison of two scorers' AUROCs on the same runs and the same examples.

One seed: DeLong's test (DeLong, DeLong & Clarke-Pearson 1988): each AUROC is the mean of
its structural components (a positive's share of negatives scored below it, a negative's
share of positives scored above it, ties counted half), and the variance of the paired
difference is var(V10_a - V10_b) / m + var(V01_a - V01_b) / n; a z test. It compares two
scorers *on one trained model*: labelled "model-level (1 seed)".

Several seeds: the estimand is the expected AUROC difference over training seeds and over
the test distribution (as harness.stats.paired_difference's for accuracy). The test set is
shared by every seed, so its example noise does not average out over seeds, and plain t
over per-seed differences is anti-conservative when the scorers rank examples differently
(simulated: benchmarks/stats_simulation.py, null b). Each run's AUROC difference is
written as a sum over examples of its Hájek projection (the structural components, centred
and divided by the class size): the per-example pseudo-values
D[s, k] = d_s + N * (g_a - g_b)[s, k] have seed means d_s exactly, and their crossed
seeds × examples ANOVA (the same variance, Satterthwaite df and 2-seed rule as
paired_difference) counts the seed variance and the shared example variance once each.

Written here: scikit-learn gives the AUROC but no variance; scipy and statsmodels have no
DeLong test. The structural components are two searchsorted calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

from harness.stats.paired import VERDICTS, _crossed_variance


@dataclass(frozen=True)
class AurocDifference:
    """mean AUROC(a) - AUROC(b), its (unadjusted) interval, the two-sided p-value of 'no
    difference', the verdict at `confidence`, the interval's method and the level."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float  # inf for DeLong's z test (one seed)
    verdict: str
    interval: str
    level: str
    seeds: int
    examples: int


def structural_components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: for each positive, the share of negatives scored
    below it (V10); for each negative, the share of positives scored above it (V01); ties
    count half. Their means are both the AUROC (higher score = positive)."""
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    below = np.searchsorted(neg_sorted, pos, side="left")
    tied = np.searchsorted(neg_sorted, pos, side="right") - below
    above = len(pos) - np.searchsorted(pos_sorted, neg, side="right")
    tied_neg = np.searchsorted(pos_sorted, neg, side="right") - np.searchsorted(
        pos_sorted, neg, side="left"
    )
    return (below + 0.5 * tied) / len(neg), (above + 0.5 * tied_neg) / len(pos)


def delong_difference(
    pos_a: np.ndarray, neg_a: np.ndarray, pos_b: np.ndarray, neg_b: np.ndarray
) -> tuple[float, float]:
    """AUROC(a) - AUROC(b) for two scorers of the same positives and negatives (element i
    of pos_a and pos_b is the same example) and DeLong's variance of that difference."""
    v10a, v01a = structural_components(pos_a, neg_a)
    v10b, v01b = structural_components(pos_b, neg_b)
    d10, d01 = v10a - v10b, v01a - v01b
    m, n = len(d10), len(d01)
    variance = (d10.var(ddof=1) if m > 1 else 0.0) / m + (d01.var(ddof=1) if n > 1 else 0.0) / n
    return float(d10.mean()), float(variance)


def _pseudo_values(a: np.ndarray, b: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Per-example pseudo-values of one run's AUROC difference: d + N * (g_a - g_b), where
    g is the Hájek projection's term of each example (centred structural component / its
    class size); their mean over examples is d exactly."""
    d, g = 0.0, np.zeros(len(positive))
    for scores, sign in ((a, 1.0), (b, -1.0)):
        v10, v01 = structural_components(scores[positive], scores[~positive])
        auc = float(v10.mean())
        d += sign * auc
        g[positive] += sign * (v10 - auc) / len(v10)
        g[~positive] += sign * (v01 - auc) / len(v01)
    return d + len(positive) * g


def paired_auroc_difference(
    a: np.ndarray,
    b: np.ndarray,
    positive: np.ndarray,
    *,
    confidence: float = 0.95,
) -> AurocDifference:
    """AUROC of scorer a minus scorer b from (seeds, examples) arrays of their scores on the
    same examples (row s: the run of seed s; higher score = positive), and `positive`, a
    boolean array of the same shape (or one row, shared by every seed) marking the
    positives: e.g. correct predictions (failure detection, varies by seed) or ID examples
    (shift detection). Every run needs at least one positive and one negative."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim == 1:
        a, b = a[None, :], b[None, :]
    positive = np.broadcast_to(np.asarray(positive, dtype=bool), a.shape) if a.ndim == 2 else None
    if a.shape != b.shape or a.ndim != 2 or positive is None:
        raise ValueError(
            f"paired_auroc_difference: a and b must be (seeds, examples) arrays of one shape; "
            f"got {a.shape} and {b.shape}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"paired_auroc_difference: confidence must be in (0, 1), got {confidence}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_auroc_difference: a and b must be finite (a NaN or inf value)")
    counts = positive.sum(axis=1)
    if (counts == 0).any() or (counts == a.shape[1]).any():
        raise ValueError("paired_auroc_difference: every run needs a positive and a negative")
    seeds, examples = a.shape
    if seeds == 1:
        row = positive[0]
        mean, variance = delong_difference(a[0, row], a[0, ~row], b[0, row], b[0, ~row])
        df = np.inf
        interval, level = "DeLong z", "model-level (1 seed)"
    else:
        pseudo = np.stack([_pseudo_values(a[s], b[s], positive[s]) for s in range(seeds)])
        mean = float(pseudo.mean())
        variance, df = _crossed_variance(pseudo)
        interval = "DeLong components, crossed seeds × examples, Satterthwaite t"
        level = f"method-level ({seeds} seeds)"
    se = float(np.sqrt(max(variance, 0.0)))
    if se == 0.0:  # identical rankings: nothing left to test
        p = 1.0 if mean == 0.0 else 0.0
        low = high = mean
    else:
        dist = _scipy_stats.norm if np.isinf(df) else _scipy_stats.t(df)
        p = float(2 * dist.sf(abs(mean) / se))
        half = float(dist.ppf(0.5 + confidence / 2)) * se
        low, high = mean - half, mean + half
    verdict = VERDICTS[2] if p >= 1 - confidence else VERDICTS[0] if mean > 0 else VERDICTS[1]
    return AurocDifference(mean, low, high, p, float(df), verdict, interval, level, seeds, examples)
