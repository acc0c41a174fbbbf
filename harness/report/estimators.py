"""Accuracy estimators ranked (docs/scorers.md, "Accuracy estimators"): per dataset and
setting (one eval config), each estimator's mean absolute error over the shifted
(shift_test) splits, the mean over seeds of each split first (summary.csv's `mean`), then
the mean over splits; rank 1 = smallest error (ties share the lowest rank). Written to
leaderboard/estimators.csv and a section of the dataset page, where any run has estimator
rows on a shifted split."""

from __future__ import annotations

import pandas as pd

from harness.report.aggregate import SETTING_COLUMNS
from harness.report.mdtable import markdown_table

COLUMNS = [*SETTING_COLUMNS, "estimator", "mean_abs_error", "worst_abs_error", "n_splits", "rank"]


def estimator_ranking(agg: pd.DataFrame) -> pd.DataFrame:
    """One row per setting × estimator from the aggregated table (harness.report.aggregate)."""
    if agg.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = agg[
        (agg["metric"] == "abs_error")
        & (agg["split_role"] == "shift_test")
        & (agg["scorer"] != "")
        & (agg["group_key"].fillna("") == "")
    ]
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = (
        rows.groupby([*SETTING_COLUMNS, "scorer"], dropna=False, sort=True)["mean"]
        .agg(mean_abs_error="mean", worst_abs_error="max", n_splits="size")
        .reset_index()
        .rename(columns={"scorer": "estimator"})
    )
    out["rank"] = (
        out.groupby(SETTING_COLUMNS, dropna=False)["mean_abs_error"].rank(method="min").astype(int)
    )
    return out.sort_values([*SETTING_COLUMNS, "rank", "estimator"])[COLUMNS].reset_index(drop=True)


def estimators_section(frame: pd.DataFrame, dataset: str) -> list[str]:
    """The Markdown section of one dataset (none without estimator rows on shifted splits)."""
    sub = frame[frame["dataset"] == dataset] if not frame.empty else frame
    if sub.empty:
        return []
    shown = sub.assign(
        setting_id=sub["setting_id"].str[:8],
        eval_id=sub["eval_id"].str[:8],
        mean_abs_error=[f"{v:.4f}" for v in sub["mean_abs_error"]],
        worst_abs_error=[f"{v:.4f}" for v in sub["worst_abs_error"]],
    )[["model", "method", "setting_id", "eval_id", "rank", "estimator", "mean_abs_error",
       "worst_abs_error", "n_splits"]]  # fmt: skip
    return [
        "",
        "## Accuracy estimators (mean absolute error over the shifted splits)",
        "",
        "Each estimator's |estimated − true accuracy| on every shift_test split (mean over "
        "seeds), averaged over the splits; rank 1 = smallest within a setting and eval "
        "config. `estimators.csv`.",
        "",
        markdown_table(shown),
    ]
