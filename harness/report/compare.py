"""Paired comparisons: methods against a baseline method (accuracy; harness.stats'
crossed seeds × examples test, Holm-adjusted per family) and post-hoc scorers against a
baseline scorer (AUROC; DeLong's components, Benjamini-Hochberg-adjusted per family).

Both read the per-example scores that a run's post-hoc stage kept (harness.rundir); runs
without them drop out, never with an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.listing import in_slices
from harness.report.aggregate import metric_rows
from harness.rundir import scores_path, stages_with_scores
from harness.stats import adjust_p_values, paired_auroc_difference, paired_difference, seeds_needed
from harness.stats.paired import VERDICTS

# Only test splits are compared (train and val numbers are not claims): the family of one
# dataset × model × eval config whose p-values are adjusted together.
TEST_ROLES = ("id_test", "shift_test")
# what every comparison table reports after its own identifying columns
STATISTIC_COLUMNS = ["seeds", "examples", "difference", "ci_low", "ci_high", "p_value",
                     "p_adjusted", "adjustment", "verdict", "level", "interval", "note"]  # fmt: skip
COMPARISON_COLUMNS = [
    "dataset",
    "model",
    "eval_id",
    "method",
    "setting_id",
    "baseline",
    "split",
    *STATISTIC_COLUMNS,
]


# the test's own fields in a comparison row (adjustment and verdict are added per family)
RESULT_FIELDS = ("seeds", "examples", "difference", "ci_low", "ci_high", "p_value", "level",
                 "interval")  # fmt: skip


def result_fields(result: Any) -> dict[str, Any]:
    """A paired test's result (harness.stats) as the comparison row's statistic fields."""
    return {f: getattr(result, f) for f in RESULT_FIELDS}


def with_scores(
    frame: pd.DataFrame, results_dir: str | Path, known: dict[tuple[str, str], bool] | None = None
) -> pd.DataFrame:
    """The rows of runs that kept per-example scores (posthoc/<eval_id>/scores/): one
    directory check per run, so that a store whose scores were pruned costs no file reads.
    known: {(run_id, eval_id): has scores} checked already (by the other comparisons of the
    same rebuild: 0.2 s at 100,000 runs), filled with what this call checks."""
    runs = frame[["run_id", "eval_id"]].drop_duplicates()
    # tolist, not itertuples: no Python call per arrow-backed cell; many runs: in forked
    # children, as the listing (0.45 -> 0.3 s at 100,000 runs; one stat per stage does not
    # pay for a fork below ~25,000 stages per process: 5,000 took 0.04-0.26 s, not 0.025)
    stages = list(zip(runs["run_id"].tolist(), runs["eval_id"].tolist(), strict=True))
    known = {} if known is None else known
    todo = [stage for stage in stages if stage not in known]
    checked = (
        in_slices(lambda part: stages_with_scores(results_dir, part), todo, None, 25_000)
        if todo  # (all checked already: no folder opened)
        else []
    )
    known.update(zip(todo, checked, strict=True))
    has = [known[stage] for stage in stages]
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
    known: dict[tuple[str, str], bool] | None = None,
) -> pd.DataFrame:
    """Accuracy of each method minus the baseline method's, per dataset, model, eval config
    and test split, on the seeds both have and on the same examples: harness.stats'
    paired_difference (unadjusted 95% interval, p-value). The verdict is better / worse
    when the p-value adjusted over the family (one dataset × model × eval config;
    `multiple_comparisons`: holm | bh | none) is below 0.05; a comparison whose own
    interval excludes 0 but loses significance after adjustment says so in `note`. With
    `min_effect` (accuracy units), `seeds_needed`: the seeds for 80% power to detect it
    (harness.stats.seeds_needed, from the per-seed differences; empty with one seed).
    known: with_scores' checks shared with scorer_comparisons."""
    root = Path(results_dir)
    plain = with_scores(metric_rows(table, "accuracy"), root, known)
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
                        **result_fields(result),
                        **planned,
                    }
                )
        _adjust(family, multiple_comparisons)
        out.extend(family)
    extra = ["seeds_needed"] if min_effect is not None else []
    frame = pd.DataFrame(out, columns=COMPARISON_COLUMNS + extra)
    if extra:
        frame["seeds_needed"] = frame["seeds_needed"].astype("Int64")
    return frame


SCORE_COLUMNS = {"index", "label", "pred", "correct", "nll"}
# scorers are compared on every test split: ID, shifted and OOD (train and val are not claims)
SCORER_ROLES = (*TEST_ROLES, "ood")
SCORER_COLUMNS = [
    "dataset",
    "model",
    "method",
    "setting_id",
    "eval_id",
    "scorer",
    "baseline",
    "metric",
    "split",
    *STATISTIC_COLUMNS,
]


def scorer_comparisons(
    table: pd.DataFrame,
    results_dir: str | Path,
    baseline: str = "msp",
    multiple_comparisons: str = "bh",
    known: dict[tuple[str, str], bool] | None = None,
) -> pd.DataFrame:
    """AUROC of each post-hoc scorer minus the baseline scorer's, on the same runs and the
    same examples: failure detection (`auroc_error`: correct vs wrong) on every labelled
    test split, and shift detection (`auroc_vs_<id split>`: ID test examples vs a shifted or
    OOD split's). harness.stats.paired_auroc_difference: DeLong's test with one seed
    (model-level), DeLong's components in a crossed seeds × examples model with several.
    Verdicts from p-values adjusted over one dataset × eval config (`multiple_comparisons`,
    Benjamini-Hochberg by default: many scorers × splits, a false discovery rate is the
    useful error); intervals unadjusted 95%; `note` marks a row that loses significance.
    known: with_scores' checks shared with paired_comparisons."""
    root = Path(results_dir)
    mask = (
        (table["scorer"] == baseline)
        & table["metric"].str.startswith("auroc_")
        & table["split_role"].isin(SCORER_ROLES)
    ).to_numpy(dtype=bool)
    # the columns read below, then the rows: a take of 8 columns, not all 26 (5,000,000 rows
    # at 100,000 runs: 0.34 -> 0.1 s)
    used = ["dataset", "model", "method", "setting_id", "eval_id", "run_id", "metric", "split"]
    base = with_scores(table[used].take(np.flatnonzero(mask)), root, known)
    families: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (dataset, model, method, setting_id, eval_id), rows in base.groupby(
        ["dataset", "model", "method", "setting_id", "eval_id"]
    ):
        tasks = sorted(set(zip(rows["metric"], rows["split"], strict=True)))
        needed = {split for _, split in tasks} | {
            m.removeprefix("auroc_vs_") for m, _ in tasks if m.startswith("auroc_vs_")
        }
        scores: list[dict[str, pd.DataFrame]] = []
        for run_id in sorted(rows["run_id"].unique()):  # with_scores: each kept scores
            frames = {}
            for split in needed:  # pooled rows have no per-example file: those tasks drop out
                try:
                    frame = pd.read_parquet(scores_path(root, run_id, eval_id, split))
                except (OSError, ValueError):
                    continue
                # row k must be the same example in every run: ordered by its index
                frames[split] = frame.sort_values("index") if "index" in frame else frame
            if frames:
                scores.append(frames)
        if not scores:  # no per-example scores kept: nothing can be paired
            continue
        names = sorted(set.intersection(*(set(f.columns) for f in scores[0].values())))
        names = [n for n in names if n not in SCORE_COLUMNS | {baseline}]
        family = families.setdefault((dataset, eval_id), [])
        for metric, split in tasks:
            runs = [r for r in _task_runs(scores, metric, split) if baseline in r[0]]
            if not runs:
                continue
            positive = np.stack([r[1] for r in runs])
            base_scores = np.stack([r[0][baseline].to_numpy(dtype=float) for r in runs])
            if not np.isfinite(base_scores).all():
                continue
            for name in names:
                if not all(name in r[0] for r in runs):
                    continue  # a scorer some run lacks (another eval config's column set)
                mine = np.stack([r[0][name].to_numpy(dtype=float) for r in runs])
                if not np.isfinite(mine).all():
                    continue  # a scorer that failed on some examples: no paired test
                result = paired_auroc_difference(mine, base_scores, positive)
                family.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "method": method,
                        "setting_id": setting_id,
                        "eval_id": eval_id,
                        "scorer": name,
                        "baseline": baseline,
                        "metric": metric,
                        "split": split,
                        **result_fields(result),
                    }
                )
    out = []
    for family in families.values():
        _adjust(family, multiple_comparisons)
        out.extend(family)
    return pd.DataFrame(out, columns=SCORER_COLUMNS)


def _adjust(family: list[dict[str, Any]], method: str) -> None:
    """Adjusted p-values, verdicts and notes of one family of comparisons (in place)."""
    adjusted = adjust_p_values(np.array([r["p_value"] for r in family]), method)
    for row, p in zip(family, adjusted, strict=True):
        significant = p < 0.05
        row["p_adjusted"] = float(p)
        row["adjustment"] = method
        row["verdict"] = (
            ("better" if row["difference"] > 0 else "worse") if significant else VERDICTS[2]
        )
        row["note"] = (
            f"p {row['p_value']:.3g} < 0.05 unadjusted; not after {method}"
            if row["p_value"] < 0.05 and not significant
            else ""
        )


def _task_runs(
    scores: list[dict[str, pd.DataFrame]], metric: str, split: str
) -> list[tuple[pd.DataFrame, np.ndarray]]:
    """Per run, the examples of one task (a frame of every scorer's scores) and which are
    positives; only runs with both classes, on the same examples as the first such run."""
    runs, keys = [], []
    for frames in scores:
        task = _task_frame(frames, metric, split)
        if task is None:
            continue
        frame, positive, key = task
        if positive.all() or not positive.any():
            continue  # e.g. every prediction correct: no failure to detect
        runs.append((frame, positive))
        keys.append(key)
    same = [len(k) == len(keys[0]) and all(map(np.array_equal, k, keys[0])) for k in keys]
    return [r for r, keep in zip(runs, same, strict=True) if keep]


def _task_frame(
    frames: dict[str, pd.DataFrame], metric: str, split: str
) -> tuple[pd.DataFrame, np.ndarray, tuple[np.ndarray, ...]] | None:
    """(every scorer's scores, positives, example identities) of one run for one task, or
    None when it has no data: auroc_error: `split`'s correct (positive) vs wrong
    predictions; auroc_vs_<ref>: ref's examples (positive) then split's."""
    reference = metric.removeprefix("auroc_vs_")
    if split not in frames or (
        metric != "auroc_error" and (reference not in frames or reference == split)
    ):
        return None
    if metric == "auroc_error":
        f = frames[split]
        return f, f["correct"].to_numpy(dtype=bool), (_ids(f),)
    ref, other = frames[reference], frames[split]
    both = pd.concat([ref, other], ignore_index=True)
    positive = np.r_[np.ones(len(ref), dtype=bool), np.zeros(len(other), dtype=bool)]
    return both, positive, (_ids(ref), _ids(other))


def _ids(frame: pd.DataFrame) -> np.ndarray:
    return frame["index"].to_numpy() if "index" in frame else np.arange(len(frame))
