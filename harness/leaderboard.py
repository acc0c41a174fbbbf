"""Collect completed runs into the tidy table and write a Markdown leaderboard per dataset.

    python -m harness.leaderboard                      # reads results/, writes below it
    python -m harness.leaderboard results_dir=runs/exp1

Aggregates within a setting (setting_id: same everything but the seed), never across
hyperparameters or data limits: mean, sample standard deviation (ddof=1) and n over seeds.
Reads completed runs only and never edits them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from scipy import stats

from harness.data import ROLES
from harness.registry import CONF_DIR
from harness.store import atomic_write_parquet, atomic_write_text, collect, collect_failures

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
    agg = grouped["value"].agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="size")
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
    path = Path(results_dir) / "runs" / run_id / "posthoc" / eval_id / "scores" / f"{split}.parquet"
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
    low = bounds["ci_low"].fillna(bounds["mean"])
    high = bounds["ci_high"].fillna(bounds["mean"])
    return pd.Series([1 + int((low > h).sum()) for h in high], index=bounds.index)


def _correct(results_dir: Path, run_id: str, eval_id: str, split: str) -> pd.Series | None:
    path = results_dir / "runs" / run_id / "posthoc" / eval_id / "scores" / f"{split}.parquet"
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
    out = []
    for (dataset, model, eval_id), sub in plain.groupby(["dataset", "model", "eval_id"]):
        # the baseline is the method without test-time adaptation; its TTA runs (method erm,
        # tta tent) are entries compared with it, named erm+tent
        tta = sub["tta"].fillna("") if "tta" in sub else pd.Series("", index=sub.index)
        is_base = (sub["method"] == baseline) & (tta == "")
        base = sub[is_base]
        if base["setting_id"].nunique() != 1:  # none, or ambiguous (several baseline settings)
            continue
        for setting_id, other in sub[~is_base].groupby("setting_id"):
            for split, rows in other.groupby("split"):
                mine = rows.set_index("seed")["run_id"]
                theirs = base[base["split"] == split].set_index("seed")["run_id"]
                seeds = sorted(set(mine.index) & set(theirs.index))
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
                # and seeds resampled too, so that seed-to-seed variance counts
                chosen = rng.integers(0, len(pairs), (resamples, len(pairs)))
                diffs = per_seed[chosen, np.arange(resamples)[:, None]].mean(axis=1)
                low, high = np.quantile(diffs, [0.025, 0.975])
                verdict = "better" if low > 0 else "worse" if high < 0 else "not distinguishable"
                out.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "eval_id": eval_id,
                        "method": rows["method"].iat[0]
                        + (f"+{tta[rows.index].iat[0]}" if tta[rows.index].iat[0] else ""),
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


def dataset_markdown(
    agg: pd.DataFrame, dataset: str, comparisons: pd.DataFrame | None = None
) -> str:
    sub = agg[agg["dataset"] == dataset]
    rule = ", ".join(sorted(sub["selection_rule"].unique()))
    parts = [
        f"# Leaderboard: {dataset}",
        "",
        "Cells are mean ± sample standard deviation (ddof=1) over the seeds of one setting "
        "(same config but the seed); `seeds` is n. A single seed shows the value alone. "
        "Accuracy cells add a 95% interval in brackets: Student's t over seeds when a "
        f"setting has several, a bootstrap over examples ({BOOTSTRAP_RESAMPLES} resamples) "
        "when it has one; the rank counts the entries whose interval lies wholly above, so "
        "entries not distinguishable from the best share rank 1. "
        f"Checkpoint selection within a run: {rule}. Every number, with its interval: "
        "`summary.csv`.",
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
    for title, metric, scorer in sections:
        table = metric_table(sub, metric, scorer, with_interval=metric == "accuracy")
        if not table.empty:
            parts += ["", f"## {title}", "", table.to_markdown(index=False, disable_numparse=True)]
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
    return "\n".join(parts) + "\n"


def write_leaderboard(results_dir: str | Path, baseline: str = "erm") -> dict[str, Path]:
    """Collects results_dir into table.parquet/.csv and leaderboard/*.md; returns the paths."""
    root = Path(results_dir)
    table, skipped = collect(root)
    atomic_write_parquet(table, root / "table.parquet")
    atomic_write_text(root / "table.csv", table.to_csv(index=False))
    agg = aggregate(table, root)
    board = root / "leaderboard"
    atomic_write_text(board / "summary.csv", agg.to_csv(index=False))
    comparisons = paired_comparisons(table, root, baseline)
    atomic_write_text(board / "comparisons.csv", comparisons.to_csv(index=False))
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
    for dataset in sorted(agg["dataset"].unique()):
        path = board / f"{dataset}.md"
        atomic_write_text(path, dataset_markdown(agg, dataset, comparisons))
        paths[dataset] = path
        n_runs = table.loc[table["dataset"] == dataset, "run_id"].nunique()
        index.append(f"- [{dataset}]({dataset}.md): {n_runs} runs")
    failures = collect_failures(root)
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


@hydra.main(config_path=str(CONF_DIR), config_name="leaderboard", version_base="1.3")
def main(cfg: DictConfig) -> None:
    paths = write_leaderboard(cfg.results_dir, cfg.baseline)
    for name, path in paths.items():
        if name not in ("table", "csv", "index"):
            print(path.read_text())
    print(f"table:       {paths['table']} (and {paths['csv'].name})")
    print(f"leaderboard: {paths['index']}")


if __name__ == "__main__":
    main()
