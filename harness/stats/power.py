"""How many seeds a comparison needs: the smallest number of seeds at which a paired t test
over per-seed differences detects `min_effect` with the asked power, planned on an upper
confidence bound of the seed-to-seed standard deviation (a few seeds estimate it badly: with
3 seeds the variance estimate ranges over a factor of ~100 between its 2.5% and 97.5% points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class SeedsNeeded:
    seeds: int | None  # None: more than max_seeds, or no variance estimate
    sd_estimate: float  # sample sd of the per-seed differences
    sd_upper: float  # its one-sided upper confidence bound, used for the plan
    min_effect: float
    power: float


def t_test_power(n: int, sd: float, effect: float, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t test on n per-seed differences with standard
    deviation sd when their mean is `effect` (the noncentral t distribution)."""
    if sd == 0:
        return 1.0 if effect != 0 else alpha
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = abs(effect) * np.sqrt(n) / sd
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def seeds_for_power(
    sd: float, min_effect: float, power: float = 0.8, alpha: float = 0.05, max_seeds: int = 1000
) -> int | None:
    """The smallest n >= 2 seeds with t_test_power >= power; None beyond max_seeds."""
    if not min_effect > 0:
        raise ValueError(f"min_effect must be > 0, got {min_effect!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    for n in range(2, max_seeds + 1):
        if t_test_power(n, sd, min_effect, alpha) >= power:
            return n
    return None


def seeds_needed(
    per_seed_differences: np.ndarray,
    min_effect: float,
    power: float = 0.8,
    alpha: float = 0.05,
    confidence: float = 0.95,
    max_seeds: int = 1000,
) -> SeedsNeeded:
    """Seeds needed to detect `min_effect` (in the differences' units, e.g. 0.01 accuracy),
    from the per-seed differences seen so far (at least 2): the seed sd is taken at its
    one-sided `confidence` upper bound, sqrt((k-1) s² / chi2_{1-confidence}(k-1))."""
    d = np.asarray(per_seed_differences, dtype=np.float64)
    k = len(d)
    if k < 2:
        return SeedsNeeded(None, float("nan"), float("nan"), min_effect, power)
    sd = float(np.std(d, ddof=1))
    upper = float(np.sqrt((k - 1) * sd**2 / stats.chi2.ppf(1 - confidence, k - 1)))
    return SeedsNeeded(
        seeds_for_power(upper, min_effect, power, alpha, max_seeds), sd, upper, min_effect, power
    )
