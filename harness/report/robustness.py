"""Effective robustness (Taori et al. 2020, "Measuring Robustness to Natural Distribution
Shifts in Image Classification"): a setting's accuracy on a shifted split minus what the
line fitted on a baseline pool of settings predicts from its ID test accuracy.

The line is fitted on transformed accuracies: `logit` (Taori et al.'s axes) or `probit`
(Miller et al. 2021, "Accuracy on the Line"); the prediction is transformed back, so effective
robustness is in accuracy units (0.02 = 2 points). A setting in the pool is left out of its
own fit, so the pool's members are measured against the others. One point per setting: the
mean over its seeds (summary.csv). scipy.stats.linregress does the fit; the leave-one-out
loop and the transforms are the only code here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from harness.report.aggregate import SETTING_COLUMNS, metric_rows
from harness.report.mdtable import markdown_table

SCALES = {
    "logit": (special.logit, special.expit),
    "probit": (special.ndtri, special.ndtr),
}
COLUMNS = [
    *SETTING_COLUMNS,
    "split",
    "id_accuracy",
    "shift_accuracy",
    "predicted_accuracy",
    "effective_robustness",
    "n_seeds",
    "scale",
    "pool_size",
]
# accuracies of exactly 0 or 1 have no logit/probit: clipped (a few examples' worth at most)
EPSILON = 1e-4


def check_options(options: Any) -> dict[str, Any] | None:
    """`effective_robustness` of conf/leaderboard.yaml: null (off) or {scale, pool, min_pool}."""
    if options is None or options is False:
        return None
    if not isinstance(options, dict):
        raise ValueError(
            "effective_robustness must be null or a mapping {scale, pool, min_pool}, "
            f"got {options!r}"
        )
    unknown = set(options) - {"scale", "pool", "min_pool"}
    if unknown:
        raise ValueError(f"effective_robustness: unknown entries {sorted(unknown)}")
    scale = options.get("scale", "logit")
    if scale not in SCALES:
        raise ValueError(
            f"effective_robustness.scale must be one of {sorted(SCALES)}, got {scale!r}"
        )
    pool = options.get("pool")
    if pool is not None and not (
        isinstance(pool, list | tuple) and pool and all(isinstance(p, str) for p in pool)
    ):
        raise ValueError(
            f"effective_robustness.pool must be null (every setting) or a list of model names, got {pool!r}"
        )
    min_pool = options.get("min_pool", 3)
    if not isinstance(min_pool, int) or isinstance(min_pool, bool) or min_pool < 2:
        raise ValueError(f"effective_robustness.min_pool must be an integer >= 2, got {min_pool!r}")
    return {"scale": scale, "pool": list(pool) if pool else None, "min_pool": min_pool}


def effective_robustness(
    agg: pd.DataFrame, scale: str = "logit", pool: Sequence[str] | None = None, min_pool: int = 3
) -> pd.DataFrame:
    """One row per dataset × setting × shifted split: the setting's mean ID test and shifted
    accuracy, the pool line's prediction and their difference. `pool`: the model names whose
    settings fit the line (None: every setting); a fit needs `min_pool` points besides the
    setting itself and two distinct ID accuracies, else the row is left out."""
    forward, inverse = SCALES[scale]
    acc = metric_rows(agg, "accuracy")
    out = []
    for _, part in acc.groupby(["dataset", "eval_id"], sort=True):
        id_rows = part[part["split_role"] == "id_test"]
        # one ID accuracy per setting: the mean over its ID test splits (usually one)
        id_acc = id_rows.groupby("setting_id")["mean"].mean()
        for split, shifted in part[part["split_role"] == "shift_test"].groupby("split", sort=True):
            points = shifted.set_index("setting_id").join(id_acc.rename("id"), how="inner")
            if points.empty:
                continue
            x = forward(points["id"].clip(EPSILON, 1 - EPSILON).to_numpy())
            y = forward(points["mean"].clip(EPSILON, 1 - EPSILON).to_numpy())
            in_pool = points["model"].isin(pool).to_numpy() if pool else np.ones(len(points), bool)
            for i, (setting_id, row) in enumerate(points.iterrows()):
                fit_on = in_pool.copy()
                fit_on[i] = False  # never its own line
                if fit_on.sum() < min_pool or np.unique(x[fit_on]).size < 2:
                    continue
                line = stats.linregress(x[fit_on], y[fit_on])
                predicted = float(inverse(line.intercept + line.slope * x[i]))
                out.append(
                    {
                        **{c: row[c] for c in SETTING_COLUMNS if c != "setting_id"},
                        "setting_id": setting_id,
                        "split": split,
                        "id_accuracy": row["id"],
                        "shift_accuracy": row["mean"],
                        "predicted_accuracy": predicted,
                        "effective_robustness": row["mean"] - predicted,
                        "n_seeds": int(row["n_seeds"]),
                        "scale": scale,
                        "pool_size": int(fit_on.sum()),
                    }
                )
    return pd.DataFrame(out, columns=COLUMNS)


def robustness_section(frame: pd.DataFrame | None, dataset: str) -> list[str]:
    """The Markdown section of one dataset: effective robustness in accuracy points (none
    when the option is off: frame None)."""
    if frame is None:
        return []
    sub = frame[frame["dataset"] == dataset]
    if sub.empty:
        return []
    shown = sub.assign(
        setting_id=sub["setting_id"].str[:8],
        value=[f"{100 * v:+.1f}" for v in sub["effective_robustness"]],
    )
    table = shown.pivot_table(
        index=["model", "method", "setting_id"], columns="split", values="value", aggfunc="first"
    ).reset_index()
    table.columns.name = None
    return [
        "",
        "## Effective robustness (accuracy points)",
        "",
        f"Shifted accuracy minus the prediction of the line fitted on the pool's ID vs shifted "
        f"accuracies ({sub['scale'].iat[0]} scale, each setting left out of its own fit; "
        "Taori et al. 2020). Means over seeds: `effective_robustness.csv`.",
        "",
        markdown_table(table),
    ]
