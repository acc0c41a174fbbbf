"""Aggregation within a setting and the per-metric tables built on it.

A setting (setting_id) is the same everything but the seed: numbers are aggregated over its
seeds, never across hyperparameters or data limits: mean, sample standard deviation
(ddof=1), n seeds and a 95% interval.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from harness.neighbours import one_array
from harness.roles import ROLES
from harness.rundir import scores_path
from harness.table import overall

# the columns that name one aggregated entry (a setting under one eval config)
SETTING_COLUMNS = [
    "dataset",
    "setting_id",
    "eval_id",
    "model",
    "method",
    "tta",
    "augment",
    "selection_rule",
]
INDEX = ["model", "method", "setting_id", "eval_id"]
LOWER_IS_BETTER = {
    "ece",
    "ece_adaptive",
    "nll",
    "brier",
    "aurc",
    "e_aurc",
    "abs_error",
    "conformal_set_size",
    "prior_l1_error",  # eval=shift: estimated vs true class prior
    "prior_l2_error",
}
ROW_KEY = ["split", "split_role", "scorer", "metric", "group_key", "group_value"]
BOOTSTRAP_RESAMPLES = 1000
# Metrics that are proportions (or rates) in [0, 1], by name or prefix: a t interval over few
# seeds can leave that range (ci_low -0.14, ci_high 1.002 were seen), so it is clipped to it
# and `interval` says so. Others that cannot be negative are clipped at 0. A dataset's own
# metric outside these names is left as computed.
UNIT_METRICS = ("accuracy", "worst_group_accuracy", "ece", "aurc", "e_aurc", "estimated_accuracy",
                "abs_error", "acc_", "F1-", "recall", "precision", "conformal_coverage",
                "p_value", "shift_detected", "accuracy_prior_corrected", "nuclear_norm",
                "balanced_accuracy", "worst_class_accuracy", "macro_f1", "worst_class_precision",
                "adjusted_accuracy")  # fmt: skip
UNIT_PREFIXES = ("auroc", "aupr", "fpr95", "ccr@", "accuracy@", "acc_", "F1-")
NON_NEGATIVE = ("nll", "brier", "temperature", "conformal_set_size", "prior_l1_error",
                "prior_l2_error", "prior_l1_shift", "mmd2")  # fmt: skip


def metric_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take: (0, 1) for proportions, (0, inf) for non-negative
    metrics, else unbounded."""
    if metric in UNIT_METRICS or metric.startswith(UNIT_PREFIXES):
        return 0.0, 1.0
    if metric in NON_NEGATIVE:
        return 0.0, np.inf
    return -np.inf, np.inf


def metric_rows(frame: pd.DataFrame, metric: str | list[str], scorer: str = "") -> pd.DataFrame:
    """The rows of `metric` (a name or a list) that are not per group, of `scorer`: "" = the
    model's own numbers, i.e. harness.table.overall's rows."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    if scorer:  # not per group (overall's other half), of that scorer
        keep = overall(frame.assign(scorer="")) & (frame["scorer"] == scorer)
    else:
        keep = overall(frame)
    return frame[frame["metric"].isin(metrics) & keep]


def split_order(frame: pd.DataFrame) -> list[str]:
    """The splits of a frame (its split and split_role columns) by role, in ROLES' order;
    splits of another role last, in the order they came."""
    roles = {r: i for i, r in enumerate(ROLES)}
    splits = frame[["split", "split_role"]].drop_duplicates("split")
    splits = splits.assign(rank=splits["split_role"].map(roles).fillna(len(roles)))
    return list(splits.sort_values("rank", kind="stable")["split"])


def aggregate(table: pd.DataFrame, results_dir: str | Path | None = None) -> pd.DataFrame:
    """Per setting and number: mean, std (ddof=1; NaN for one seed), n seeds, and a 95%
    interval: Student's t over seeds when there are several; with one seed (e.g. an
    off-the-shelf model), a bootstrap over the run's per-example scores for plain accuracy
    (needs results_dir), else none. `interval` says which."""
    return aggregate_firsts(table, results_dir)[0]


# what partcache.first_rows groups by: setting_id and eval_id stand for the setting's columns
FIRST_KEYS = ["setting_id", "eval_id", *ROW_KEY]


def aggregate_firsts(
    table: pd.DataFrame, results_dir: str | Path | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """aggregate's frame and, for the store's table, partcache.first_rows(table) from the
    same grouping (1.5 s at 100,000 runs when grouped again): each row's first position,
    when grouping by FIRST_KEYS gives as many groups (so the same groups); else None."""
    columns = [
        *SETTING_COLUMNS,
        *ROW_KEY,
        "mean",
        "std",
        "n_seeds",
        "ci_low",
        "ci_high",
        "interval",
    ]
    if table.empty:
        return pd.DataFrame(columns=columns), None
    # tables collected before the augment column existed: "" is no augmentation
    table = table.assign(augment=table["augment"].fillna("") if "augment" in table else "")
    keys = [*SETTING_COLUMNS, *ROW_KEY]
    # the groups of groupby(keys, dropna=False, sort=False) from integer codes (group_ids):
    # pandas would hash every arrow string of every key column (1 s of 2.3 at 100,000 runs);
    # the same groups in the same order, each group's values in row order, so the same bits
    if all(_arrow_strings(table[k]) for k in keys):  # the store's table
        # FIRST_KEYS first: their groups are counted on the way (the ids do not depend on
        # the order of the keys)
        rest = [k for k in keys if k not in FIRST_KEYS]
        ids, first, coarse = _group_ids(table, [*FIRST_KEYS, *rest], len(FIRST_KEYS))
        firsts = first if coarse == len(first) else None
        # a categorical of the ids: groupby takes its codes as they are (no second hashing)
        by: Any = pd.Categorical.from_codes(ids, categories=pd.RangeIndex(len(first)))
        grouped = table["value"].groupby(by, sort=True, observed=True)
        agg = grouped.agg(mean="mean", std="std", n_seeds="size")  # pandas: ddof=1
        agg = pd.concat(
            [table[keys].take(first).reset_index(drop=True), agg.reset_index(drop=True)], axis=1
        )
    else:  # other key types (object strings become str levels there): pandas decides
        firsts = None
        by = [table[k] for k in keys]
        grouped = table["value"].groupby(by, dropna=False, sort=False)
        agg = grouped.agg(mean="mean", std="std", n_seeds="size").reset_index()
    half = stats.t.ppf(0.975, agg["n_seeds"] - 1) * agg["std"] / np.sqrt(agg["n_seeds"])
    several = agg["n_seeds"] > 1
    agg["ci_low"] = np.where(several, agg["mean"] - half, np.nan)
    agg["ci_high"] = np.where(several, agg["mean"] + half, np.nan)
    agg["interval"] = np.where(several, "t over seeds", "")
    _clip_to_range(agg)
    if results_dir is not None:
        plain = (agg["metric"] == "accuracy") & overall(agg)
        single = np.flatnonzero(~several.to_numpy() & plain.to_numpy())
        # each entry's run only when some entry has one seed (0.08 s at 10,000 runs)
        runs = None
        if len(single):
            runs = table["run_id"].groupby(by, sort=False, observed=True, dropna=False).first()
            runs = runs.reset_index(drop=True)
        for i in single:
            row = agg.iloc[i]
            low, high = bootstrap_accuracy(results_dir, runs.iat[i], row["eval_id"], row["split"])
            if np.isfinite(low):
                agg.loc[agg.index[i], ["ci_low", "ci_high", "interval"]] = [
                    low,
                    high,
                    "bootstrap over examples",
                ]
    return agg[columns], firsts


def _arrow_strings(column: pd.Series) -> bool:
    """Whether a column is held as one arrow string array (what to_frame makes)."""
    data = getattr(column.array, "_pa_array", None)
    return data is not None and (
        pa.types.is_string(data.type) or pa.types.is_large_string(data.type)
    )


def _column_codes(column: pd.Series) -> np.ndarray:
    """Integer codes of a column's values (equal values, missing ones included, share a
    code). An arrow string column is encoded by its runs of equal neighbours: the store's
    rows come stage after stage, so a setting's columns hash one value per stage, not per row."""
    data = getattr(column.array, "_pa_array", None)
    if data is None or not (pa.types.is_string(data.type) or pa.types.is_large_string(data.type)):
        return pd.factorize(column, use_na_sentinel=False)[0].astype(np.int64)
    data = one_array(data)  # (no copy of a one-chunk column)
    n = len(data)
    # a boundary where a value differs from the one before (a missing value: always one,
    # which is harmless: a run only needs one value throughout)
    change = pc.fill_null(pc.not_equal(data[1:], data[:-1]), True).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    if len(starts) > n // 4:  # few repeats: encode the rows themselves (no copy by a take)
        encoded = pc.dictionary_encode(data, null_encoding="encode")
        return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    encoded = pc.dictionary_encode(data.take(pa.array(starts)), null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes if len(starts) == n else np.repeat(codes, np.diff(np.append(starts, n)))


def group_ids(frame: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row, its group of frame.groupby(keys, dropna=False, sort=False) (0, 1, ... in
    the order groups first appear), and each group's first row position."""
    ids, first, _ = _group_ids(frame, keys, 0)
    return ids, first


def _group_ids(
    frame: pd.DataFrame, keys: list[str], coarse: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """group_ids, and the number of groups of the first `coarse` keys alone (0 if 0): each
    group has one combination of them, so they are those of the groups' first rows."""
    combined = np.zeros(len(frame), dtype=np.int64)
    size = 1
    head = None
    for j, key in enumerate(keys):
        if j == coarse:
            head = combined
        codes = _column_codes(frame[key])
        width = int(codes.max()) + 1 if len(codes) else 1
        if size * width >= 2**62:  # would overflow: renumber the combination so far
            combined, uniques = pd.factorize(combined)
            size = len(uniques)
        combined = combined * width + codes
        size *= width
    ids = pd.factorize(combined)[0]  # first-appearance order
    # a group starts where its id exceeds every id before it (ids appear in order)
    seen = np.maximum.accumulate(ids) if len(ids) else ids
    first = np.flatnonzero(ids > np.concatenate([[-1], seen[:-1]]))
    if head is None:  # coarse == len(keys)
        head = combined
    groups = len(pd.unique(head[first])) if coarse else 0
    return ids, first, groups


def _clip_to_range(agg: pd.DataFrame) -> None:
    """Intervals of bounded metrics clipped to the metric's range, in place, and marked.
    The range and its mark are worked out once per metric name, not once per row (0.19 s
    for 100,000 rows at 10,000 runs)."""
    # (factorized as it is held: no object array of every row's name first)
    codes, uniques = pd.factorize(agg["metric"], use_na_sentinel=False)
    names = uniques.tolist()
    ranges = [metric_range(m) for m in names]
    low = np.array([r[0] for r in ranges], dtype=float)[codes]
    high = np.array([r[1] for r in ranges], dtype=float)[codes]
    ci_low, ci_high = agg["ci_low"].to_numpy(dtype=float), agg["ci_high"].to_numpy(dtype=float)
    below, above = ci_low < low, ci_high > high  # NaN compares False: left as it is
    outside = np.flatnonzero(below | above)
    agg["ci_low"] = np.where(below, low, ci_low)
    agg["ci_high"] = np.where(above, high, ci_high)
    marks = [f", clipped to [{lo:g}, {hi:g}]" for lo, hi in ranges]
    interval = agg["interval"].to_numpy(dtype=object, copy=True)
    for i in outside:
        interval[i] = interval[i] + marks[codes[i]]
    agg["interval"] = interval


def bootstrap_accuracy(
    results_dir: str | Path,
    run_id: str,
    eval_id: str,
    split: str,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float]:
    """95% percentile interval of accuracy, resampling the run's examples (fixed seed)."""
    path = scores_path(results_dir, run_id, eval_id, split)
    if not path.is_file():
        return float("nan"), float("nan")
    try:
        correct = pd.read_parquet(path, columns=["correct"])["correct"].to_numpy(dtype=float)
    except Exception:  # no per-example scores: no interval, never a crash
        return float("nan"), float("nan")
    rng = np.random.default_rng(0)
    means = correct[rng.integers(0, len(correct), (resamples, len(correct)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def metric_table(
    agg: pd.DataFrame, metric: str, scorer: str = "", with_interval: bool = False
) -> pd.DataFrame:
    """One row per setting, one column per split: 'mean ± std' of `metric`."""
    sel = agg[(agg["metric"] == metric) & (agg["scorer"] == scorer)]
    if metric == "accuracy":
        sel = sel[sel["group_key"] == ""]
    if sel.empty:
        return pd.DataFrame()
    # the training augmentation is shown beside the method when some setting has one
    index = (
        [*INDEX[:2], "augment", *INDEX[2:]]
        if sel.get("augment", pd.Series()).ne("").any()
        else INDEX
    )
    clipped = sel["interval"].astype(str).str.contains("clipped")
    cells = _cells(sel, clipped.to_numpy(dtype=bool), with_interval)
    fast = _metric_table_fast(sel, index, cells, metric, with_interval)
    if fast is not None:
        return fast
    sel = sel.assign(cell=cells)
    wide = sel.pivot_table(index=index, columns="split", values="cell", aggfunc="first")
    seeds = sel.groupby(index)["n_seeds"].max().rename("seeds")
    order = [s for s in split_order(sel) if s in wide.columns]
    means = sel.pivot_table(index=index, columns="split", values="mean")
    sort_col = next(
        (
            s
            for s in order
            if s in means and sel.loc[sel["split"] == s, "split_role"].iat[0] == "id_test"
        ),
        order[0],
    )
    lower_is_better = metric in LOWER_IS_BETTER
    wide = wide[order].join(seeds).loc[means[sort_col].sort_values(ascending=lower_is_better).index]
    rank_col = []
    if with_interval and not lower_is_better:
        bounds = sel[sel["split"] == sort_col].set_index(index)[["mean", "ci_low", "ci_high"]]
        rank_col = [f"rank ({sort_col})"]
        wide[rank_col[0]] = uncertain_ranks(bounds).reindex(wide.index)
    wide = wide.reset_index()
    wide["setting_id"] = wide["setting_id"].str[:8]
    wide["eval_id"] = wide["eval_id"].str[:8]
    return wide[[*index, "seeds", *rank_col, *order]]


def _cells(sel: pd.DataFrame, clipped: np.ndarray, with_interval: bool) -> list[str]:
    """_cell of every row (with its interval and † mark when `with_interval`): the same
    strings, without a numpy call per cell (math.isfinite on plain floats)."""
    means, stds = sel["mean"].to_numpy(dtype=float).tolist(), sel["std"].to_numpy(dtype=float)
    seeds = sel["n_seeds"].tolist()
    out = [
        f"{m:.3f} ± {s:.3f}" if n > 1 and math.isfinite(s) else f"{m:.3f}"
        for m, s, n in zip(means, stds.tolist(), seeds, strict=True)
    ]
    if with_interval:
        lows = sel["ci_low"].to_numpy(dtype=float).tolist()
        highs = sel["ci_high"].to_numpy(dtype=float).tolist()
        out = [
            (f"{c} [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else c)
            + ("†" if k else "")
            for c, lo, hi, k in zip(out, lows, highs, clipped.tolist(), strict=True)
        ]
    return out


def _metric_table_fast(
    sel: pd.DataFrame, index: list[str], cells: list[str], metric: str, with_interval: bool
) -> pd.DataFrame | None:
    """metric_table's frame from integer codes, the same as its pandas pivots give (0.3 s of
    a dataset's page at 10,000 runs), for the usual case: string keys without missing values,
    one row per setting and split, every mean a number. None otherwise (pandas decides)."""
    keys = [*index, "split"]
    if not all(isinstance(sel[c].dtype, pd.StringDtype) for c in keys):
        return None
    if sel["n_seeds"].dtype != np.int64 or sel["mean"].dtype != np.float64:
        return None
    mean = sel["mean"].to_numpy()
    if np.isnan(mean).any() or any(sel[c].isna().any() for c in keys):
        return None
    # each index column's values ranked in Python's string order (few distinct values,
    # sorted by sorted()): a row's ranks combined give the order of its key tuple, so the
    # rows sorted are sorted(set(entries)) without a tuple per row (0.7 s at 100,000 runs)
    combined = np.zeros(len(sel), dtype=np.int64)
    size = 1
    for c in index:
        codes, uniques = pd.factorize(sel[c])
        names = uniques.tolist()  # (not list(): an arrow array iterated a value at a time)
        rank = np.empty(len(names), dtype=np.int64)
        rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
        size *= max(len(names), 1)
        if size >= 2**62:
            return None  # (never with the store's keys) pandas decides
        combined = combined * len(names) + rank[codes]
    keys_sorted, first, row_of = np.unique(combined, return_index=True, return_inverse=True)
    split_codes, split_names = pd.factorize(sel["split"])  # in the order the splits come
    if len(np.unique(row_of * len(split_names) + split_codes)) != len(sel):
        return None  # several rows of a setting and split: pandas takes the first / mean
    starts = np.unique(split_codes, return_index=True)[1]  # each split's first role
    role = dict(zip(split_names, sel["split_role"].iloc[starts].tolist(), strict=True))
    ranks = {r: i for i, r in enumerate(ROLES)}  # split_order's, without a drop_duplicates
    order = sorted(role, key=lambda s: ranks.get(role[s], len(ranks)))
    sort_col = next((s for s in order if role[s] == "id_test"), order[0])
    by_split = {s: np.flatnonzero(split_codes == j) for j, s in enumerate(split_names)}
    n_rows = len(keys_sorted)
    seeds = np.full(n_rows, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(seeds, row_of, sel["n_seeds"].to_numpy())
    sort_values = np.full(n_rows, np.nan)
    sort_values[row_of[by_split[sort_col]]] = mean[by_split[sort_col]]
    lower_is_better = metric in LOWER_IS_BETTER
    # the same sort as metric_table's (quicksort, NaN last): ties fall the same way
    shown = pd.Series(sort_values).sort_values(ascending=lower_is_better).index.to_numpy()
    out: dict[str, Any] = {}
    for c in index:  # a row's values: those of its first row (its key tuple's)
        values = sel[c].iloc[first[shown]].tolist()
        if c in ("setting_id", "eval_id"):
            values = [v[:8] for v in values]
        out[c] = pd.array(values, dtype=sel[c].dtype)
    out["seeds"] = seeds[shown]
    rank_col = []
    if with_interval and not lower_is_better:
        at_sort = by_split[sort_col]
        bounds = pd.DataFrame(
            {
                "mean": mean[at_sort],
                "ci_low": sel["ci_low"].to_numpy(dtype=float)[at_sort],
                "ci_high": sel["ci_high"].to_numpy(dtype=float)[at_sort],
            },
            index=row_of[at_sort],
        )
        rank_col = [f"rank ({sort_col})"]
        out[rank_col[0]] = uncertain_ranks(bounds).reindex(shown).to_numpy()
    cell_dtype = pd.Series(cells[:1]).dtype  # what pandas makes of the cell strings
    texts = np.array(cells, dtype=object)
    for s in order:
        column = np.full(n_rows, np.nan, dtype=object)
        column[row_of[by_split[s]]] = texts[by_split[s]]
        out[s] = pd.array(column[shown].tolist(), dtype=cell_dtype)
    return pd.DataFrame(out)[[*index, "seeds", *rank_col, *order]]


def uncertain_ranks(bounds: pd.DataFrame) -> pd.Series:
    """Rank = 1 + the number of entries whose 95% interval lies wholly above this one's, so
    entries not distinguishable from the best share rank 1. Entries without an interval
    count as a point at their mean."""
    low = bounds["ci_low"].fillna(bounds["mean"]).to_numpy()
    high = bounds["ci_high"].fillna(bounds["mean"]).to_numpy()
    above = np.sort(low)  # for each entry: how many lows lie above its high
    return pd.Series(1 + len(low) - np.searchsorted(above, high, side="right"), index=bounds.index)
