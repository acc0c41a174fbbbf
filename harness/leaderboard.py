"""Collect completed runs into the tidy table and write a Markdown leaderboard per dataset.

    python -m harness.leaderboard                      # reads results/, writes below it
    python -m harness.leaderboard results_dir=runs/exp1

Aggregates within a setting (setting_id: same everything but the seed), never across
hyperparameters or data limits: mean, sample standard deviation (ddof=1) and n over seeds.
Reads completed runs only and never edits them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy import stats

from harness.corruption_metrics import corruption_errors, mce, summarize
from harness.data import ROLES
from harness.keys import content_hash
from harness.page import write_page
from harness.plots import PLOTS_VERSION, Drawing, plot_builders
from harness.registry import CONF_DIR
from harness.rundir import has_scores, scores_path
from harness.selection import select_settings
from harness.store import atomic_write_csv, atomic_write_json, atomic_write_text
from harness.table import collect_cached, collect_failures

log = logging.getLogger("harness.leaderboard")

SETTING_COLUMNS = ["dataset", "setting_id", "eval_id", "model", "method", "tta", "selection_rule"]
INDEX = ["model", "method", "setting_id", "eval_id"]
LOWER_IS_BETTER = {"ece", "nll", "brier", "aurc", "e_aurc", "abs_error"}
ROW_KEY = ["split", "split_role", "scorer", "metric", "group_key", "group_value"]


BOOTSTRAP_RESAMPLES = 1000


def aggregate(table: pd.DataFrame, results_dir: str | Path | None = None) -> pd.DataFrame:
    """Per setting and number: mean, std (ddof=1; NaN for one seed), n seeds, and a 95%
    interval: Student's t over seeds when there are several; with one seed (e.g. an
    off-the-shelf model), a bootstrap over the run's per-example scores for plain accuracy
    (needs results_dir), else none. `interval` says which."""
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
        return pd.DataFrame(columns=columns)
    keys = [*SETTING_COLUMNS, *ROW_KEY]
    grouped = table.groupby(keys, dropna=False, sort=False)
    agg = grouped["value"].agg(mean="mean", std="std", n_seeds="size")  # pandas: ddof=1
    agg = agg.reset_index()
    half = stats.t.ppf(0.975, agg["n_seeds"] - 1) * agg["std"] / np.sqrt(agg["n_seeds"])
    several = agg["n_seeds"] > 1
    agg["ci_low"] = np.where(several, agg["mean"] - half, np.nan)
    agg["ci_high"] = np.where(several, agg["mean"] + half, np.nan)
    agg["interval"] = np.where(several, "t over seeds", "")
    if results_dir is not None:
        runs = grouped["run_id"].first().reset_index(drop=True)
        for i in np.flatnonzero(~several.to_numpy()):
            row = agg.iloc[i]
            if row["metric"] == "accuracy" and row["scorer"] == "" and row["group_key"] == "":
                low, high = bootstrap_accuracy(
                    results_dir, runs.iat[i], row["eval_id"], row["split"]
                )
                if np.isfinite(low):
                    agg.loc[agg.index[i], ["ci_low", "ci_high", "interval"]] = [
                        low,
                        high,
                        "bootstrap over examples",
                    ]
    return agg[columns]


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


def _cell(mean: float, std: float, n: int, low: float = np.nan, high: float = np.nan) -> str:
    cell = f"{mean:.3f} ± {std:.3f}" if n > 1 and np.isfinite(std) else f"{mean:.3f}"
    if np.isfinite(low) and np.isfinite(high):
        cell += f" [{low:.3f}, {high:.3f}]"
    return cell


def _split_order(agg: pd.DataFrame) -> list[str]:
    splits = agg[["split", "split_role"]].drop_duplicates()
    splits = splits.assign(rank=splits["split_role"].map({r: i for i, r in enumerate(ROLES)}))
    return list(splits.sort_values("rank", kind="stable")["split"])


def metric_table(
    agg: pd.DataFrame, metric: str, scorer: str = "", with_interval: bool = False
) -> pd.DataFrame:
    """One row per setting, one column per split: 'mean ± std' of `metric`."""
    sel = agg[(agg["metric"] == metric) & (agg["scorer"] == scorer)]
    if metric == "accuracy":
        sel = sel[sel["group_key"] == ""]
    if sel.empty:
        return pd.DataFrame()
    sel = sel.assign(
        cell=[
            _cell(m, s, n, lo, hi) if with_interval else _cell(m, s, n)
            for m, s, n, lo, hi in zip(
                sel["mean"], sel["std"], sel["n_seeds"], sel["ci_low"], sel["ci_high"], strict=True
            )
        ]
    )
    wide = sel.pivot_table(index=INDEX, columns="split", values="cell", aggfunc="first")
    seeds = sel.groupby(INDEX)["n_seeds"].max().rename("seeds")
    order = [s for s in _split_order(sel) if s in wide.columns]
    means = sel.pivot_table(index=INDEX, columns="split", values="mean")
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
        bounds = sel[sel["split"] == sort_col].set_index(INDEX)[["mean", "ci_low", "ci_high"]]
        rank_col = [f"rank ({sort_col})"]
        wide[rank_col[0]] = uncertain_ranks(bounds).reindex(wide.index)
    wide = wide.reset_index()
    wide["setting_id"] = wide["setting_id"].str[:8]
    wide["eval_id"] = wide["eval_id"].str[:8]
    return wide[[*INDEX, "seeds", *rank_col, *order]]


def uncertain_ranks(bounds: pd.DataFrame) -> pd.Series:
    """Rank = 1 + the number of entries whose 95% interval lies wholly above this one's, so
    entries not distinguishable from the best share rank 1. Entries without an interval
    count as a point at their mean."""
    low = bounds["ci_low"].fillna(bounds["mean"]).to_numpy()
    high = bounds["ci_high"].fillna(bounds["mean"]).to_numpy()
    above = np.sort(low)  # for each entry: how many lows lie above its high
    return pd.Series(1 + len(low) - np.searchsorted(above, high, side="right"), index=bounds.index)


def with_scores(frame: pd.DataFrame, results_dir: str | Path) -> pd.DataFrame:
    """The rows of runs that kept per-example scores (posthoc/<eval_id>/scores/): one
    directory check per run, so that a store whose scores were pruned costs no file reads."""
    runs = frame[["run_id", "eval_id"]].drop_duplicates()
    has = [
        has_scores(str(results_dir), run_id, eval_id)
        for run_id, eval_id in runs.itertuples(index=False, name=None)
    ]
    return frame.merge(runs[has], on=["run_id", "eval_id"]) if not all(has) else frame


def _correct(results_dir: Path, run_id: str, eval_id: str, split: str) -> pd.Series | None:
    path = scores_path(results_dir, run_id, eval_id, split)
    if not path.is_file():  # pruned or never written: a stat, not a raised error per run
        return None
    try:
        frame = pd.read_parquet(path, columns=["index", "correct"])
    except Exception:
        return None
    return frame.set_index("index")["correct"].astype(float)


def paired_comparisons(
    table: pd.DataFrame,
    results_dir: str | Path,
    baseline: str = "erm",
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> pd.DataFrame:
    """Accuracy of each method minus the baseline method's, per dataset, model, eval config
    and split, on the seeds both have and on the same examples: a paired bootstrap that
    resamples seeds and, within each seed, examples (the same examples for both methods).
    verdict: better / worse when the 95% interval excludes 0, else not distinguishable."""
    root = Path(results_dir)
    plain = table[
        (table["metric"] == "accuracy") & (table["scorer"] == "") & (table["group_key"] == "")
    ]
    plain = with_scores(plain, root)
    tta = plain["tta"].fillna("") if "tta" in plain else pd.Series("", index=plain.index)
    # plain dicts, not a pandas group per setting and split: 10,000 runs make thousands of
    # small groups, and each pandas selection costs more than the whole loop here
    # (dataset, model, eval_id) -> setting_id -> split -> seed -> run_id, and each setting's name
    runs: dict[tuple, dict[str, dict[str, dict[Any, str]]]] = {}
    names: dict[str, tuple[str, str]] = {}
    columns = ["dataset", "model", "eval_id", "setting_id", "split", "seed", "run_id", "method"]
    for (*group, setting_id, split, seed, run_id, method), t in zip(
        plain[columns].itertuples(index=False, name=None), tta, strict=True
    ):
        runs.setdefault(tuple(group), {}).setdefault(setting_id, {}).setdefault(split, {})[seed] = (
            run_id
        )
        names[setting_id] = (method, t)
    out = []
    for (dataset, model, eval_id), settings in sorted(runs.items()):
        # the baseline is the method without test-time adaptation; its TTA runs (method erm,
        # tta tent) are entries compared with it, named erm+tent
        base_ids = [s for s in settings if names[s] == (baseline, "")]
        if len(base_ids) != 1:  # none, or ambiguous (several baseline settings)
            continue
        base = settings[base_ids[0]]
        for setting_id in sorted(set(settings) - set(base_ids)):
            method, setting_tta = names[setting_id]
            for split, mine in sorted(settings[setting_id].items()):
                theirs = base.get(split, {})
                seeds = sorted(set(mine) & set(theirs))
                pairs = [
                    (
                        _correct(root, mine[s], eval_id, split),
                        _correct(root, theirs[s], eval_id, split),
                    )
                    for s in seeds
                ]
                pairs = [
                    (a, b.reindex(a.index)) for a, b in pairs if a is not None and b is not None
                ]
                pairs = [(a.to_numpy(), b.to_numpy()) for a, b in pairs if not b.isna().any()]
                if not pairs:
                    continue
                rng = np.random.default_rng(0)
                per_seed = np.stack(
                    [  # seed × resample: example bootstrap, paired
                        (a[idx].mean(axis=1) - b[idx].mean(axis=1))
                        for a, b in pairs
                        for idx in [rng.integers(0, len(a), (resamples, len(a)))]
                    ]
                )
                low, high, verdict = _paired_interval(per_seed, rng)
                out.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "eval_id": eval_id,
                        "method": method + (f"+{setting_tta}" if setting_tta else ""),
                        "setting_id": setting_id,
                        "baseline": baseline,
                        "split": split,
                        "seeds": len(pairs),
                        "difference": float(np.mean([a.mean() - b.mean() for a, b in pairs])),
                        "ci_low": float(low),
                        "ci_high": float(high),
                        "verdict": verdict,
                    }
                )
    return pd.DataFrame(
        out,
        columns=[
            "dataset",
            "model",
            "eval_id",
            "method",
            "setting_id",
            "baseline",
            "split",
            "seeds",
            "difference",
            "ci_low",
            "ci_high",
            "verdict",
        ],
    )


def _paired_interval(per_seed: np.ndarray, rng: np.random.Generator) -> tuple[float, float, str]:
    """95% interval of a paired difference from per-seed bootstrap replicates (seed × resample):
    the seeds are resampled too, so that seed-to-seed variance counts. The verdict is
    better / worse when the interval excludes 0, else not distinguishable."""
    resamples = per_seed.shape[1]
    chosen = rng.integers(0, len(per_seed), (resamples, len(per_seed)))
    diffs = per_seed[chosen, np.arange(resamples)[:, None]].mean(axis=1)
    low, high = np.quantile(diffs, [0.025, 0.975])
    verdict = "better" if low > 0 else "worse" if high < 0 else "not distinguishable"
    return float(low), float(high), verdict


def weighted_auroc(
    pos: np.ndarray, neg: np.ndarray, pos_weights: np.ndarray, neg_weights: np.ndarray
) -> np.ndarray:
    """AUROC (higher score = positive, ties counted half) of every row of example weights
    (resamples × examples). A bootstrap resample is a row of counts, so one sort of the
    original scores serves every resample: O(resamples × n) instead of a sort per resample.
    Written here because scikit-learn's roc_auc_score takes one weight vector per call
    (its sample_weight agrees with this; the test checks it)."""
    order = np.argsort(neg, kind="stable")
    neg_sorted, neg_weights = neg[order], neg_weights[:, order]
    cum = np.concatenate([np.zeros((len(neg_weights), 1)), np.cumsum(neg_weights, axis=1)], axis=1)
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    below, ties = cum[:, lo], cum[:, hi] - cum[:, lo]
    total = pos_weights.sum(axis=1) * neg_weights.sum(axis=1)
    return ((below + 0.5 * ties) * pos_weights).sum(axis=1) / total


def bootstrap_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """resamples × n counts: how often each example is drawn in each bootstrap resample."""
    draws = rng.integers(0, n, (resamples, n)) + np.arange(resamples)[:, None] * n
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n)


SCORE_COLUMNS = {"index", "label", "pred", "correct", "nll"}


def scorer_comparisons(
    table: pd.DataFrame,
    results_dir: str | Path,
    baseline: str = "msp",
    resamples: int = 200,
) -> pd.DataFrame:
    """AUROC of each post-hoc scorer minus the baseline scorer's, on the same runs and the
    same examples: failure detection (`auroc_error`: correct vs wrong) on every labelled
    test split, and shift detection (`auroc_vs_<id split>`: ID test examples vs a shifted or
    OOD split's). Paired bootstrap over examples within each run (the same resampled examples
    for both scorers) and over seeds, from the per-example scores the post-hoc stage kept."""
    root = Path(results_dir)
    columns = [
        "dataset",
        "model",
        "method",
        "setting_id",
        "eval_id",
        "scorer",
        "baseline",
        "metric",
        "split",
        "seeds",
        "difference",
        "ci_low",
        "ci_high",
        "verdict",
    ]
    base = table[
        (table["scorer"] == baseline)
        & table["metric"].str.startswith("auroc_")
        & table["split_role"].isin(["id_test", "shift_test", "ood"])
    ]
    base = with_scores(base, root)
    out = []
    for (dataset, model, method, setting_id, eval_id), rows in base.groupby(
        ["dataset", "model", "method", "setting_id", "eval_id"]
    ):
        tasks = sorted(set(zip(rows["metric"], rows["split"], strict=True)))
        needed = {split for _, split in tasks} | {
            m.removeprefix("auroc_vs_") for m, _ in tasks if m.startswith("auroc_vs_")
        }
        scores: dict[str, dict[str, pd.DataFrame]] = {}
        for run_id in sorted(rows["run_id"].unique()):
            if not has_scores(str(root), run_id, eval_id):
                continue
            frames = {}
            for split in needed:  # pooled rows have no per-example file: those tasks drop out
                try:
                    frames[split] = pd.read_parquet(scores_path(root, run_id, eval_id, split))
                except (OSError, ValueError):
                    continue
            if frames:
                scores[run_id] = frames
        if not scores:  # no per-example scores kept: nothing can be paired
            continue
        first = next(iter(scores.values()))
        names = sorted(set.intersection(*(set(f.columns) for f in first.values())))
        names = [n for n in names if n not in SCORE_COLUMNS | {baseline}]
        for metric, split in tasks:
            # per run: one set of resampled examples (as counts) shared by every scorer, so
            # each comparison is paired, and the baseline's replicates are computed once
            rng = np.random.default_rng(0)
            runs = []
            for frames in scores.values():
                base_pn = _pos_neg(frames, metric, split, baseline)
                if base_pn is None:
                    continue
                pos, neg = base_pn
                wp = bootstrap_counts(rng, len(pos), resamples)
                wn = bootstrap_counts(rng, len(neg), resamples)
                ones = np.ones((1, len(pos))), np.ones((1, len(neg)))
                runs.append(
                    (
                        frames,
                        wp,
                        wn,
                        ones,
                        weighted_auroc(pos, neg, wp, wn),
                        weighted_auroc(pos, neg, *ones)[0],
                    )
                )
            if not runs:
                continue
            for name in names:
                per_seed, observed = [], []
                for frames, wp, wn, ones, base_reps, base_value in runs:
                    pos, neg = _pos_neg(frames, metric, split, name)
                    per_seed.append(weighted_auroc(pos, neg, wp, wn) - base_reps)
                    observed.append(weighted_auroc(pos, neg, *ones)[0] - base_value)
                low, high, verdict = _paired_interval(np.stack(per_seed), rng)
                out.append(
                    [
                        dataset,
                        model,
                        method,
                        setting_id,
                        eval_id,
                        name,
                        baseline,
                        metric,
                        split,
                        len(per_seed),
                        float(np.mean(observed)),
                        low,
                        high,
                        verdict,
                    ]
                )
    return pd.DataFrame(out, columns=columns)


def _pos_neg(
    frames: dict[str, pd.DataFrame], metric: str, split: str, scorer: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """(positive, negative) scores of one scorer for one task, or None when it has no data:
    auroc_error: correct vs wrong predictions of `split`; auroc_vs_<ref>: ref's vs split's."""
    reference = metric.removeprefix("auroc_vs_")
    if split not in frames or (
        metric != "auroc_error" and (reference not in frames or reference == split)
    ):
        return None
    if metric == "auroc_error":
        f = frames[split]
        correct = f["correct"].to_numpy(dtype=bool)
        if correct.all() or not correct.any():
            return None
        s = f[scorer].to_numpy()
        return s[correct], s[~correct]
    return frames[reference][scorer].to_numpy(), frames[split][scorer].to_numpy()


def dataset_markdown(
    agg: pd.DataFrame,
    dataset: str,
    comparisons: pd.DataFrame | None = None,
    primary_metric: str = "accuracy",
    selected: pd.DataFrame | None = None,
    scorer_comparison: pd.DataFrame | None = None,
    plots: dict[str, list[Path]] | None = None,
    corruptions: dict[str, pd.DataFrame] | None = None,
) -> str:
    sub = agg[agg["dataset"] == dataset]
    rule = ", ".join(sorted(sub["selection_rule"].unique()))
    parts = [
        f"# Leaderboard: {dataset}",
        "",
        "Cells are mean ± sample standard deviation (ddof=1) over the seeds of one setting "
        "(same config but the seed); `seeds` is n. A single seed shows the value alone. "
        f"{primary_metric} cells (the primary metric) add a 95% interval in brackets: "
        "Student's t over seeds when a setting has several; a bootstrap over examples "
        f"({BOOTSTRAP_RESAMPLES} resamples) when it has one (accuracy only); the rank counts "
        "the entries whose interval lies wholly above, so entries not distinguishable from "
        f"the best share rank 1. Checkpoint selection within a run: {rule}. Every number, "
        "with its interval: `summary.csv`.",
    ]
    sections = [
        ("Accuracy", "accuracy", ""),
        ("Worst-group accuracy", "worst_group_accuracy", ""),
        ("Expected calibration error (lower is better)", "ece", ""),
        ("MSP: AUROC of correct vs wrong predictions", "auroc_error", "msp"),
    ]
    sections += [
        (f"MSP: AUROC of {m.removeprefix('auroc_vs_')} vs each shifted split", m, "msp")
        for m in sorted(sub.loc[sub["metric"].str.startswith("auroc_vs_"), "metric"].unique())
    ]
    primary = [s for s in sections if s[1] == primary_metric and s[2] == ""]
    if not primary:
        primary = [(primary_metric, primary_metric, "")]
    sections = primary + [s for s in sections if s not in primary]
    for title, metric, scorer in sections:
        table = metric_table(sub, metric, scorer, with_interval=metric == primary_metric)
        if not table.empty:
            title += " (primary metric)" if metric == primary_metric and not scorer else ""
            parts += ["", f"## {title}", "", table.to_markdown(index=False, disable_numparse=True)]
    if selected is not None:
        parts += _selection_section(agg, selected[selected["dataset"] == dataset], primary_metric)
    comp = comparisons[comparisons["dataset"] == dataset] if comparisons is not None else None
    if comp is not None and not comp.empty:
        shown = comp.assign(
            setting_id=comp["setting_id"].str[:8],
            difference=[
                f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                for d, lo, hi in zip(
                    comp["difference"], comp["ci_low"], comp["ci_high"], strict=True
                )
            ],
        )[["model", "method", "setting_id", "split", "seeds", "difference", "verdict"]]
        parts += [
            "",
            f"## Accuracy compared with {comp['baseline'].iat[0]}",
            "",
            "Paired: the same seeds and the same examples; 95% interval from a bootstrap "
            f"over examples within seeds ({BOOTSTRAP_RESAMPLES} resamples). Few seeds "
            "rarely separate methods: 'not distinguishable' is the honest default.",
            "",
            shown.to_markdown(index=False, disable_numparse=True),
        ]
    if corruptions is not None:
        parts += _corruption_section(corruptions, dataset)
    if scorer_comparison is not None:
        parts += _scorer_section(scorer_comparison[scorer_comparison["dataset"] == dataset])
    return "\n".join(parts + _plots_section(dataset, plots)) + "\n"


def _plots_section(dataset: str, plots: dict[str, list[Path]] | None) -> list[str]:
    if not plots:
        return []
    links = [f"- [{name}](plots/{dataset}/{files[0].name})" for name, files in plots.items()]
    return ["", "## Plots", "", *links]


def _selection_section(agg: pd.DataFrame, selected: pd.DataFrame, metric: str) -> list[str]:
    """The setting each search chose and its primary metric per split; shown only where
    some search had several settings to choose from."""
    if selected.empty or selected["settings"].max() < 2:
        return []
    rule = selected["selection"].iat[0]
    chosen = agg[agg["setting_id"].isin(set(selected["setting_id"]))]
    table = metric_table(chosen, metric)
    if table.empty:
        return []
    info = selected.assign(setting_id=selected["setting_id"].str[:8])[
        ["setting_id", "settings", "criterion"]
    ]
    table = table.merge(info, on="setting_id", how="left")
    table["criterion"] = table["criterion"].map(lambda v: f"{v:.3f}")
    front = ["model", "method", "setting_id", "settings", "criterion", "seeds"]
    table = table[front + [c for c in table.columns if c not in front + ["eval_id"]]]
    return [
        "",
        f"## {metric} after model selection across hyperparameters: {rule}",
        "",
        f"Per search (same everything but hyperparameters and seeds), the setting with the "
        f"best {rule} (mean over seeds, `criterion`) among `settings` settings. "
        "Chosen from recorded numbers; nothing was retrained.",
        "",
        table.to_markdown(index=False, disable_numparse=True),
    ]


def corruption_tables(table: pd.DataFrame, reference: str | None = None) -> dict[str, pd.DataFrame]:
    """Accuracy per severity (mean over corruptions) and overall per setting, and mCE against
    `reference` when one is named (harness.corruption_metrics); {} without corruption splits."""
    by = ["dataset", "model", "method", "setting_id"]
    errors = corruption_errors(table, by=by)
    if errors.empty:
        return {}
    parts = summarize(errors, by)
    out = {"per_severity": parts["per_severity"], "mean": parts["mean"]}
    if reference:
        out["mce"] = mce(table, reference, by=by)
    return out


def _corruption_section(corruptions: dict[str, pd.DataFrame], dataset: str) -> list[str]:
    if not corruptions:
        return []
    sev = corruptions["per_severity"]
    sev = sev[sev["dataset"] == dataset]
    if sev.empty:
        return []
    wide = sev.assign(accuracy=1 - sev["error"]).pivot_table(
        index=["model", "method", "setting_id", "generated"], columns="severity", values="accuracy"
    )
    wide.columns = [f"severity {c}" for c in wide.columns]
    mean = corruptions["mean"].set_index(["model", "method", "setting_id", "generated"])
    wide.insert(0, "mean accuracy", 1 - mean["error"].reindex(wide.index))
    wide.insert(1, "corruptions", mean["corruptions"].reindex(wide.index))
    if "mce" in corruptions and not corruptions["mce"].empty:
        m = corruptions["mce"]
        m = m[m["dataset"] == dataset].set_index(["model", "method", "setting_id", "generated"])
        wide["mCE"] = m["mce"].reindex(wide.index)
        wide["relative mCE"] = m["relative_mce"].reindex(wide.index)
    wide = wide.reset_index()
    wide["setting_id"] = wide["setting_id"].str[:8]
    text = wide.to_markdown(index=False, floatfmt=".3f")
    reference = (
        corruptions["mce"]["reference"].iat[0]
        if "mce" in corruptions and len(corruptions["mce"])
        else None
    )
    return [
        "",
        "## Corruptions",
        "",
        "Accuracy on the corruption splits, mean over corruptions per severity and overall "
        "(runs of a setting averaged first; `generated` marks sets made by "
        "`harness.prepare`, never the released files)"
        + (f"; mCE and relative mCE against {reference}" if reference else "")
        + ". Per corruption: `python -m harness.corruption_metrics`.",
        "",
        text,
    ]


def _scorer_section(comp: pd.DataFrame) -> list[str]:
    if comp.empty:
        return []
    shown = comp.assign(
        task=comp["metric"] + " " + comp["split"],
        cell=[
            f"{d:+.3f}{' ▲' if v == 'better' else ' ▼' if v == 'worse' else ''}"
            for d, v in zip(comp["difference"], comp["verdict"], strict=True)
        ],
    )
    wide = shown.pivot_table(
        index=["model", "method", "scorer"], columns="task", values="cell", aggfunc="first"
    ).reset_index()
    return [
        "",
        f"## Post-hoc scorers compared with {comp['baseline'].iat[0]} (AUROC difference)",
        "",
        "Paired: the same runs and the same examples, bootstrap over examples within each "
        f"run and over seeds ({int(comp['seeds'].max())} seeds at most). ▲ better / ▼ worse "
        "when the 95% interval excludes 0; no mark: not distinguishable. `auroc_error`: "
        "correct vs wrong predictions; `auroc_vs_<id split>`: that split vs the shifted one. "
        "Intervals: `scorer_comparisons.csv`.",
        "",
        wide.to_markdown(index=False, disable_numparse=True),
    ]


def write_leaderboard(
    results_dir: str | Path,
    baseline: str = "erm",
    scorer_baseline: str | None = "msp",
    scorer_resamples: int = 200,
    model_selection: str | None = "id_val",
    primary_metric: dict[str, str] | str = "accuracy",
    outputs: tuple[str, ...] | list[str] = ("markdown", "plots", "html"),
    corruption_reference: str | None = None,
    plot_workers: int | str = "auto",
) -> dict[str, Path]:
    """Collects results_dir into table.parquet/.csv, summary and comparison CSVs, and the
    outputs asked for: leaderboard/*.md, plots (PNG + PDF), index.html. Returns the paths."""
    root = Path(results_dir)
    unknown = set(outputs) - {"markdown", "plots", "html"}
    if unknown:
        raise ValueError(f"leaderboard outputs must be among markdown, plots, html: {unknown}")
    primaries = primary_metric if isinstance(primary_metric, dict) else {}
    default_primary = primaries.get("default", "accuracy") if primaries else primary_metric
    table, skipped, changed = collect_cached(root)
    agg = aggregate(table, root)
    board = root / "leaderboard"
    datasets = sorted(agg["dataset"].unique())

    def primary_of(dataset: str) -> str:
        return primaries.get(dataset, default_primary) if primaries else default_primary

    jobs = {
        board / "plots" / dataset: (
            table[table["dataset"] == dataset],
            agg[agg["dataset"] == dataset],
            primary_of(dataset),
            baseline,
        )
        for dataset in (datasets if "plots" in outputs else [])
    }
    # the plots are drawn (in worker processes) while the tables are made here
    with CachedPlots(jobs, root, resolve_plot_workers(plot_workers)) as plots:
        if changed or not (root / "table.csv").is_file():
            atomic_write_csv(table, root / "table.csv")
        atomic_write_csv(agg, board / "summary.csv")
        selected = None
        if model_selection:
            selected = select_settings(table, model_selection, root)
            atomic_write_csv(selected, board / "selection.csv")
        # after a hyperparameter search, the chosen setting of each method is what is
        # compared (with several baseline settings and no selection, there is no single
        # baseline)
        chosen = (
            table if selected is None else table[table["setting_id"].isin(selected["setting_id"])]
        )
        comparisons = paired_comparisons(chosen, root, baseline)
        atomic_write_csv(comparisons, board / "comparisons.csv")
        scorer_comp = None
        if scorer_baseline:
            scorer_comp = scorer_comparisons(table, root, scorer_baseline, scorer_resamples)
            atomic_write_csv(scorer_comp, board / "scorer_comparisons.csv")
        corruptions = corruption_tables(table, corruption_reference)
        for name, frame in corruptions.items():
            atomic_write_csv(frame, board / f"corruptions_{name}.csv")
        # the Markdown too, while the plots are drawn; their links are added after
        texts = {
            dataset: dataset_markdown(
                agg,
                dataset,
                comparisons,
                primary_of(dataset),
                selected,
                scorer_comp,
                None,
                corruptions,
            )
            for dataset in (datasets if "markdown" in outputs else [])
        }
        failures = collect_failures(root)
        all_plots = {out_dir.name: files for out_dir, files in plots.result().items()}
    paths = {
        "table": root / "table.parquet",
        "csv": root / "table.csv",
        "index": board / "README.md",
    }
    index = [
        "# Leaderboards",
        "",
        f"{table['run_id'].nunique()} completed runs, {len(table)} rows "
        f"({len(skipped)} run directories skipped as incomplete or unreadable).",
        "",
    ]
    runs_per_dataset = table.groupby("dataset")["run_id"].nunique()
    for dataset in datasets:
        if dataset in texts:
            path = board / f"{dataset}.md"
            plots_links = _plots_section(dataset, all_plots.get(dataset))
            atomic_write_text(path, texts[dataset] + "".join(f"{line}\n" for line in plots_links))
            paths[dataset] = path
        index.append(f"- [{dataset}]({dataset}.md): {runs_per_dataset.get(dataset, 0)} runs")
    if "html" in outputs:
        paths["html"] = write_page(agg, all_plots, board / "index.html")
        index += ["", "Sortable, filterable tables with the plots: [index.html](index.html)."]
    if not failures.empty:
        per_setting = (
            failures.groupby(["dataset", "model", "method", "setting_id"])
            .agg(
                failed=("run_id", "size"),
                seeds=("seed", lambda v: ",".join(map(str, sorted(v)))),
                last_reason=("reason", "last"),
            )
            .reset_index()
        )
        per_setting["setting_id"] = per_setting["setting_id"].str[:8]
        index += [
            "",
            f"## Failed runs ({len(failures)})",
            "",
            "Rerunning the sweep retries them (`retry_failed=false` skips them). Reasons "
            "and tracebacks: `runs/<run_id>/FAILED`.",
            "",
            per_setting.to_markdown(index=False, disable_numparse=True),
        ]
    atomic_write_text(board / "README.md", "\n".join(index) + "\n")
    return paths


PLOT_KEY_COLUMNS = [
    "run_id",
    "eval_id",
    "split",
    "scorer",
    "metric",
    "group_key",
    "group_value",
    "value",
    "n",
]


def _plot_key(rows: pd.DataFrame, primary_metric: str, baseline: str) -> str:
    """What a dataset's plots depend on: the rows' content (not their order), the options
    and matplotlib's version."""
    import matplotlib

    hashed = pd.util.hash_pandas_object(
        rows[[c for c in PLOT_KEY_COLUMNS if c in rows.columns]], index=False
    )
    return content_hash(
        {
            "rows": hashlib.sha256(np.sort(hashed.to_numpy()).tobytes()).hexdigest(),
            "primary_metric": primary_metric,
            "baseline": baseline,
            "matplotlib": matplotlib.__version__,
            "plots": PLOTS_VERSION,
        }
    )


def _drawn_already(out_dir: Path, key: str) -> dict[str, list[Path]] | None:
    try:
        previous = json.loads((out_dir / ".plots.json").read_text())
        files = {name: [out_dir / f for f in names] for name, names in previous["files"].items()}
        if previous["key"] == key and all(p.is_file() for ps in files.values() for p in ps):
            return files
    except (OSError, ValueError, KeyError):
        pass
    return None


class CachedPlots:
    """The plots of each dataset (out_dir -> (its rows, its agg, primary metric, baseline)),
    drawn only where the same rows and options did not draw the files already there
    (out_dir/.plots.json): plots are most of a rebuild's time, and a sweep usually adds
    runs to one dataset only. What must be drawn starts at once, in `workers` processes;
    `result()` waits for it and returns out_dir -> name -> [png, pdf]."""

    def __init__(
        self,
        jobs: dict[Path, tuple[pd.DataFrame, pd.DataFrame, str, str]],
        results_dir: Path,
        workers: int = 1,
    ) -> None:
        self.files: dict[Path, dict[str, list[Path]]] = {}
        self.keys: dict[Path, str] = {}
        builders = {}
        for out_dir, (rows, agg, primary_metric, baseline) in jobs.items():
            key = _plot_key(rows, primary_metric, baseline)
            drawn = _drawn_already(out_dir, key)
            if drawn is not None:
                self.files[out_dir] = drawn
                continue
            self.keys[out_dir] = key
            for name, build in plot_builders(
                rows, agg, results_dir, primary_metric, baseline
            ).items():
                builders[out_dir / name] = build
        self.drawing = Drawing(builders, workers)

    def result(self) -> dict[Path, dict[str, list[Path]]]:
        written = self.drawing.result()
        for out_dir, key in self.keys.items():
            mine = {stem.name: paths for stem, paths in written.items() if stem.parent == out_dir}
            names = {name: [p.name for p in paths] for name, paths in mine.items()}
            atomic_write_json(out_dir / ".plots.json", {"key": key, "files": names})
            self.files[out_dir] = mine
        return self.files

    def __enter__(self) -> CachedPlots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drawing.close()


def cached_plots(
    jobs: dict[Path, tuple[pd.DataFrame, pd.DataFrame, str, str]],
    results_dir: Path,
    workers: int = 1,
) -> dict[Path, dict[str, list[Path]]]:
    """CachedPlots(...).result(): draws what must be drawn and waits for it."""
    with CachedPlots(jobs, results_dir, workers) as plots:
        return plots.result()


def resolve_plot_workers(setting: int | str) -> int:
    """`plot_workers` of the leaderboard config: auto = the usable cores, at most 8."""
    if setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(8, cores or 1))
    return max(1, int(setting))


def leaderboard_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """write_leaderboard's keyword arguments from a leaderboard config (conf/leaderboard.yaml)."""
    names = (
        "baseline",
        "scorer_baseline",
        "scorer_resamples",
        "model_selection",
        "primary_metric",
        "outputs",
        "corruption_reference",
        "plot_workers",
    )
    return {k: cfg[k] for k in names if k in cfg}


@hydra.main(config_path=str(CONF_DIR), config_name="leaderboard", version_base="1.3")
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    paths = write_leaderboard(c["results_dir"], **leaderboard_options(c))
    for name, path in paths.items():
        if name not in ("table", "csv", "index", "html"):
            print(path.read_text())
    print(f"table:       {paths['table']} (and {paths['csv'].name})")
    print(f"leaderboard: {paths['index']}")
    if "html" in paths:
        print(f"page:        {paths['html']}")


if __name__ == "__main__":
    main()
