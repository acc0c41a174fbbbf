"""Curve statistics of claims (harness/claim_rules.py): one number per seed read off a side's
values over x (a config key such as `trainer.epochs`, `x_key`, or a number in the split's
name, `x`), e.g. how many epochs a method needs to reach its best worst-group accuracy.

- `peak_x`: the x at which the side's value is highest (the smallest such x on ties);
- `peak_drop`: the highest value minus the value at the largest x (how much is lost by
  training on past the best point: 0 when the curve ends at its peak);
- `value_at_max_x`: the value at the largest x (where the longest training ends).

Each side gives its per-seed values; the rule's statistic is a - b per seed (b a constant
`value`, or 0 when the rule has no b), with Student's t over seeds (`test: seeds_t`).
The points of a curve are whatever runs the sweep made: with `selection_rule=last_epoch`
and a constant learning rate, runs at several `trainer.epochs` are one training trajectory
sampled at those lengths (the shuffle order depends only on (seed, epoch)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CURVE_STATISTICS = ("peak_x", "peak_drop", "value_at_max_x")


def curve_values(matrix: pd.DataFrame, xs: list[float], statistic: str) -> pd.Series:
    """(seeds × x points) values and each column's x -> the statistic per seed (a seed with
    a missing point is left out: an unfinished run)."""
    if statistic not in CURVE_STATISTICS:
        raise ValueError(f"statistic must be one of {CURVE_STATISTICS}, got {statistic!r}")
    order = np.argsort(np.asarray(xs, dtype=float), kind="stable")
    x = np.asarray(xs, dtype=float)[order]
    values = matrix.dropna().to_numpy(float)[:, order]
    if statistic == "peak_x":
        per_seed = x[np.argmax(values, axis=1)]  # argmax: the first (smallest x) on ties
    elif statistic == "peak_drop":
        per_seed = values.max(axis=1) - values[:, -1]
    else:
        per_seed = values[:, -1]
    return pd.Series(per_seed, index=matrix.dropna().index, dtype=float)
