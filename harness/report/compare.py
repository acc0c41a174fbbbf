"""Paired comparisons: methods against a baseline method (accuracy; harness.stats'
crossed seeds × examples test, Holm-adjusted per family) and post-hoc scorers against a
baseline scorer (AUROC; examples as bootstrap counts, one sort per run).

Both read the per-example scores that a run's post-hoc stage kept (harness.rundir); runs
without them drop out, never with an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.report.aggregate import metric_rows
from harness.rundir import has_scores, scores_path
from harness.stats import adjust_p_values, paired_difference, seeds_needed

# Only test splits are compared (train and val numbers are not claims): the family of one
# dataset × model × eval config whose p-values are adjusted together.
TEST_ROLES = ("id_test", "shift_test")
COMPARISON_COLUMNS = [
    "dataset",
    "model",
    "eval_id",
    "method",
    "setting_id",
    "baseline",
    "split",
    "seeds",
    "examples",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "adjustment",
    "verdict",
    "level",
    "interval",
    "note",
]


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
    multiple_comparisons: str = "holm",
    min_effect: float | None = None,
) -> pd.DataFrame:
    """Accuracy of each method minus the baseline method's, per dataset, model, eval config
    and test split, on the seeds both have and on the same examples: harness.stats'
    paired_difference (unadjusted 95% interval, p-value). The verdict is better / worse
    when the p-value adjusted over the family (one dataset × model × eval config;
    `multiple_comparisons`: holm | bh | none) is below 0.05; a comparison whose own
    interval excludes 0 but loses significance after adjustment says so in `note`. With
    `min_effect` (accuracy units), `seeds_needed`: the seeds for 80% power to detect it
    (harness.stats.seeds_needed, from the per-seed differences; empty with one seed)."""
    root = Path(results_dir)
    plain = with_scores(metric_rows(table, "accuracy"), root)
    if "split_role" in plain:
        plain = plain[plain["split_role"].isin(TEST_ROLES)]
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
        family = []
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
                if not pairs or len({len(a) for a, _ in pairs}) != 1 or len(pairs[0][0]) < 2:
                    continue  # no shared examples, or seeds scored on different examples
                a_all, b_all = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
                result = paired_difference(a_all, b_all)
                planned = {}
                if min_effect is not None:
                    need = seeds_needed((a_all - b_all).mean(axis=1), min_effect)
                    planned = {"seeds_needed": need.seeds}
                family.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "eval_id": eval_id,
                        "method": method + (f"+{setting_tta}" if setting_tta else ""),
                        "setting_id": setting_id,
                        "baseline": baseline,
                        "split": split,
                        "seeds": result.seeds,
                        "examples": result.examples,
                        "difference": result.difference,
                        "ci_low": result.ci_low,
                        "ci_high": result.ci_high,
                        "p_value": result.p_value,
                        "level": result.level,
                        "interval": result.interval,
                        **planned,
                    }
                )
        adjusted = adjust_p_values(np.array([r["p_value"] for r in family]), multiple_comparisons)
        for row, p in zip(family, adjusted, strict=True):
            significant = p < 0.05
            row["p_adjusted"] = float(p)
            row["adjustment"] = multiple_comparisons
            row["verdict"] = (
                ("better" if row["difference"] > 0 else "worse")
                if significant
                else "not distinguishable"
            )
            row["note"] = (
                f"p {row['p_value']:.3g} < 0.05 unadjusted; not after {multiple_comparisons}"
                if row["p_value"] < 0.05 and not significant
                else ""
            )
        out.extend(family)
    extra = ["seeds_needed"] if min_effect is not None else []
    frame = pd.DataFrame(out, columns=COMPARISON_COLUMNS + extra)
    if extra:
        frame["seeds_needed"] = frame["seeds_needed"].astype("Int64")
    return frame


def _paired_interval(per_seed: np.ndarray, rng: np.random.Generator) -> tuple[float, float, str]:
    """95% interval of a paired difference from per-seed bootstrap replicates (seed × resample):
    the seeds are resampled too, so that seed-to-seed variance counts. The verdict is
    better / worse when the interval excludes 0, else not distinguishable. Used by the
    scorer comparisons only (not yet moved to harness.stats: see docs/statistics.md)."""
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
