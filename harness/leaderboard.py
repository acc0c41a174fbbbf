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

from harness.data import ROLES
from harness.registry import CONF_DIR
from harness.store import atomic_write_parquet, atomic_write_text, collect, collect_failures

log = logging.getLogger("harness.leaderboard")

SETTING_COLUMNS = ["dataset", "setting_id", "eval_id", "model", "method", "tta", "selection_rule"]
INDEX = ["model", "method", "setting_id", "eval_id"]
LOWER_IS_BETTER = {"ece", "nll", "brier", "aurc", "e_aurc", "abs_error"}
ROW_KEY = ["split", "split_role", "scorer", "metric", "group_key", "group_value"]


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """mean, std (ddof=1; NaN for one seed), n seeds, per setting and number."""
    if table.empty:
        return pd.DataFrame(columns=[*SETTING_COLUMNS, *ROW_KEY, "mean", "std", "n_seeds"])
    grouped = table.groupby([*SETTING_COLUMNS, *ROW_KEY], dropna=False, sort=False)["value"]
    agg = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="size")
    return agg.reset_index()


def _cell(mean: float, std: float, n: int) -> str:
    if n > 1 and np.isfinite(std):
        return f"{mean:.3f} ± {std:.3f}"
    return f"{mean:.3f}"


def _split_order(agg: pd.DataFrame) -> list[str]:
    splits = agg[["split", "split_role"]].drop_duplicates()
    splits = splits.assign(rank=splits["split_role"].map({r: i for i, r in enumerate(ROLES)}))
    return list(splits.sort_values("rank", kind="stable")["split"])


def metric_table(agg: pd.DataFrame, metric: str, scorer: str = "") -> pd.DataFrame:
    """One row per setting, one column per split: 'mean ± std' of `metric`."""
    sel = agg[(agg["metric"] == metric) & (agg["scorer"] == scorer)]
    if metric == "accuracy":
        sel = sel[sel["group_key"] == ""]
    if sel.empty:
        return pd.DataFrame()
    sel = sel.assign(
        cell=[
            _cell(m, s, n) for m, s, n in zip(sel["mean"], sel["std"], sel["n_seeds"], strict=True)
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
    wide = wide.reset_index()
    wide["setting_id"] = wide["setting_id"].str[:8]
    wide["eval_id"] = wide["eval_id"].str[:8]
    return wide[[*INDEX, "seeds", *order]]


def dataset_markdown(agg: pd.DataFrame, dataset: str) -> str:
    sub = agg[agg["dataset"] == dataset]
    rule = ", ".join(sorted(sub["selection_rule"].unique()))
    parts = [
        f"# Leaderboard: {dataset}",
        "",
        "Cells are mean ± sample standard deviation (ddof=1) over the seeds of one setting "
        "(same config but the seed); `seeds` is n. A single seed shows the value alone. "
        f"Checkpoint selection within a run: {rule}.",
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
        table = metric_table(sub, metric, scorer)
        if not table.empty:
            parts += ["", f"## {title}", "", table.to_markdown(index=False, disable_numparse=True)]
    return "\n".join(parts) + "\n"


def write_leaderboard(results_dir: str | Path) -> dict[str, Path]:
    """Collects results_dir into table.parquet/.csv and leaderboard/*.md; returns the paths."""
    root = Path(results_dir)
    table, skipped = collect(root)
    atomic_write_parquet(table, root / "table.parquet")
    atomic_write_text(root / "table.csv", table.to_csv(index=False))
    agg = aggregate(table)
    board = root / "leaderboard"
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
        atomic_write_text(path, dataset_markdown(agg, dataset))
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
    paths = write_leaderboard(cfg.results_dir)
    for name, path in paths.items():
        if name not in ("table", "csv", "index"):
            print(path.read_text())
    print(f"table:       {paths['table']} (and {paths['csv'].name})")
    print(f"leaderboard: {paths['index']}")


if __name__ == "__main__":
    main()
