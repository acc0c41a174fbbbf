"""The claims' statistics across settings (harness/claim_rules.py applies them), kept apart
because they read many settings per seed rather than one value per seed and split:

- `rank_correlation` (claim 2, Jaeger et al. 2023): per seed, Spearman's ρ between the
  ranks of the rule's `scorers` on side a's metric and on side b's (each the scorer's mean
  over the side's splits); Student's t over the seeds' ρ, compared with `reference`.
- `r2` (claim 5, Miller et al. 2021): per seed and split of the side, the R² of the
  least-squares line of scale(accuracy on the split) on scale(accuracy on `x_splits`) over
  the runs of that seed the rule selects (the models: e.g. architectures × training
  lengths); a (seeds × splits) matrix, then compared with side b (a constant or another
  R²) as a `difference` is.
- a side's `scorers: [...]` with `reduce: max|min|mean` (e.g. the best other scorer, per
  seed and split).

scipy does the correlations and the fits (spearmanr, linregress); the scales are
harness/report/robustness.py's (probit as in Miller et al., logit as in Taori et al.),
plus `linear` (raw accuracies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

REDUCE = ("max", "min", "mean")
SCALES = ("probit", "logit", "linear")


def check_fit_rule(t: Mapping[str, Any], where: str) -> None:
    """The entries only these statistics use, or a ValueError naming the key."""
    stat = t["statistic"]
    scorers = t.get("scorers")
    if stat == "rank_correlation":
        if not (isinstance(scorers, list) and len(set(scorers)) >= 3
                and all(isinstance(s, str) for s in scorers)):  # fmt: skip
            raise ValueError(
                f"{where}.scorers must list at least 3 scorers to rank, got {scorers!r}"
            )
        if t["test"] != "seeds_t":
            raise ValueError(f"{where}.test must be seeds_t for statistic rank_correlation")
        for side in ("a", "b"):
            s = t.get(side)
            if not isinstance(s, Mapping) or "value" in s or "scorer" in s or "scorers" in s:
                raise ValueError(f"{where}.{side}: rank_correlation needs two sides of rows "
                                 f"(metric / splits / where; the scorers are the rule's)")  # fmt: skip
        ref = t.get("reference", 0.0)
        if isinstance(ref, bool) or not isinstance(ref, int | float) or not -1 < ref < 1:
            raise ValueError(f"{where}.reference must be a number in (-1, 1), got {ref!r}")
    elif scorers is not None or "reference" in t:
        raise ValueError(f"{where}: scorers / reference belong to statistic rank_correlation")
    if stat == "r2":
        xs = t.get("x_splits")
        if not (isinstance(xs, list) and xs and all(isinstance(s, str) for s in xs)):
            raise ValueError(f"{where}.x_splits must be a non-empty list of split patterns")
        if "b" not in t:
            raise ValueError(f"{where}.b is required for statistic r2 (a value or another R²)")
    elif "x_splits" in t:
        raise ValueError(f"{where}.x_splits belongs to statistic r2")
    for key, s in (("", t), (".a", t.get("a") or {}), (".b", t.get("b") or {})):
        if "scale" in s:
            if stat != "r2" or s["scale"] not in SCALES:
                raise ValueError(f"{where}{key}.scale must be one of {list(SCALES)} "
                                 f"(statistic r2 only), got {s['scale']!r}")  # fmt: skip
    for side in ("a", "b"):
        s = t.get(side) or {}
        if "scorers" in s or "reduce" in s:
            names = s.get("scorers")
            if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
                raise ValueError(f"{where}.{side}.scorers must be a non-empty list of scorers")
            if s.get("reduce") not in REDUCE or "scorer" in s:
                raise ValueError(f"{where}.{side}: scorers need reduce: one of {list(REDUCE)} "
                                 f"(and no scorer), got {s.get('reduce')!r}")  # fmt: skip


def reduce_scorers(
    rows: pd.DataFrame, how: str, by: list[str], scorers: list[str], name: str
) -> pd.DataFrame:
    """One value per `by` (seed, split, ...) from several scorers' rows: their max / min /
    mean (e.g. the best of the other scorers); every scorer must have its row there."""
    counts = rows.groupby(by)["scorer"].nunique()
    if (counts < len(set(scorers))).any():
        raise ValueError(f"rule {name!r}: not every one of {scorers} has a row per seed and split")
    return rows.groupby(by, as_index=False)["value"].agg(how)


def scorer_matrix(rows: pd.DataFrame, scorers: list[str], name: str) -> pd.DataFrame:
    """(seeds × scorers): each scorer's mean over the side's splits, or a ValueError when a
    seed lacks one or has several runs."""
    rows = rows[rows["scorer"].isin(scorers)]
    dup = rows.duplicated(["seed", "split", "scorer"], keep=False)
    if dup.any():
        raise ValueError(f"rule {name!r}: several runs per seed, split and scorer: narrow `where`")
    m = rows.groupby(["seed", "scorer"])["value"].mean().unstack("scorer")
    missing = sorted(set(scorers) - set(m.columns))
    if missing or m.isna().any().any():
        raise ValueError(f"rule {name!r}: scorers without rows on every seed: "
                         f"{missing or m.columns[m.isna().any()].tolist()}")  # fmt: skip
    return m[list(scorers)]


def rank_correlations(a: pd.DataFrame, b: pd.DataFrame, name: str) -> np.ndarray:
    """Spearman's ρ per seed between two (seeds × scorers) matrices (ties: mean ranks)."""
    seeds = a.index.intersection(b.index)
    if len(seeds) < 2:
        raise ValueError(f"rule {name!r}: needs at least 2 seeds on both sides, has {list(seeds)}")
    rhos = np.array([scipy_stats.spearmanr(a.loc[s], b.loc[s]).statistic for s in seeds])
    if np.isnan(rhos).any():
        raise ValueError(f"rule {name!r}: a seed's scorers are all tied on one side (no ranks)")
    return rhos


def _transform(values: np.ndarray, scale: str) -> np.ndarray:
    if scale == "linear":
        return values
    from harness.report.robustness import EPSILON
    from harness.report.robustness import SCALES as FORWARD

    return FORWARD[scale][0](np.clip(values, EPSILON, 1 - EPSILON))


def r2_matrix(y: pd.DataFrame, x: pd.DataFrame, scale: str, name: str) -> pd.DataFrame:
    """(seeds × splits) R² of the line of scale(y) on scale(x) over each seed's runs.

    y: rows (seed, run_id, split, value) of the side's splits; x: rows of the x splits,
    averaged per run. Needs at least 3 runs per seed and two distinct x."""
    for rows, what in ((y, "y"), (x, "x")):
        if rows.duplicated(["seed", "run_id", "split"]).any():
            raise ValueError(f"rule {name!r}: several {what} rows per run and split")
    xv = x.groupby(["seed", "run_id"])["value"].mean().rename("x")
    points = y.pivot(index=["seed", "run_id"], columns="split", values="value").join(
        xv, how="inner"
    )
    out = {}
    for seed, part in points.groupby(level="seed"):
        if len(part) < 3 or part["x"].nunique() < 2:
            raise ValueError(f"rule {name!r}: seed {seed} has {len(part)} runs; a line needs "
                             f">= 3 with two distinct x")  # fmt: skip
        xs = _transform(part["x"].to_numpy(float), scale)
        out[seed] = {}
        for split in part.columns.drop("x"):
            ys = part[split].to_numpy(float)
            if np.isnan(ys).any():
                raise ValueError(f"rule {name!r}: seed {seed} lacks split {split} in a run")
            ys = _transform(ys, scale)
            # a constant y (e.g. every model at chance) has no R²: 0, nothing explained
            out[seed][split] = (
                float(scipy_stats.linregress(xs, ys).rvalue ** 2) if np.ptp(ys) > 0 else 0.0
            )
    if len(out) < 2:
        raise ValueError(f"rule {name!r}: needs at least 2 seeds, has {list(out)}")
    return pd.DataFrame.from_dict(out, orient="index").sort_index()
