"""The Markdown leaderboards: one page per dataset (its tables by metric, model selection,
paired comparisons, corruptions, scorers, plot links) and the index of them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.neighbours import changes
from harness.report.aggregate import BOOTSTRAP_RESAMPLES, metric_table
from harness.report.mdtable import markdown_table


def dataset_markdown(
    agg: pd.DataFrame,
    dataset: str,
    comparisons: pd.DataFrame | None = None,
    primary_metric: str = "accuracy",
    selected: pd.DataFrame | None = None,
    scorer_comparison: pd.DataFrame | None = None,
    plots: dict[str, list[Path]] | None = None,
    corruptions: dict[str, pd.DataFrame] | None = None,
    headline: list[str] | None = None,
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
        "the best share rank 1; † marks an interval clipped to the metric's range (a t "
        f"interval over few seeds can leave [0, 1]). Checkpoint selection within a run: {rule}. Every number, "
        "with its interval: `summary.csv`.",
    ]
    parts += headline or []
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
            parts += ["", f"## {title}", "", markdown_table(table)]
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
        )[
            ["model", "method", "setting_id", "split", "seeds", "difference", "verdict", "level"]
            + (["seeds_needed"] if "seeds_needed" in comp else [])
        ]
        parts += [
            "",
            f"## Accuracy compared with {comp['baseline'].iat[0]}",
            "",
            "Paired: the same seeds and the same examples. Intervals are unadjusted 95% "
            "(seeds × examples as crossed random effects, Satterthwaite t; one seed: a "
            "model-level paired t over examples); verdicts come from p-values adjusted "
            f"over this table ({comp['adjustment'].iat[0]}), test splits only. Few seeds "
            "rarely separate methods: 'not distinguishable' is the honest default.",
            "",
            markdown_table(shown),
        ]
    if corruptions is not None:
        parts += _corruption_section(corruptions, dataset)
    if scorer_comparison is not None:
        parts += _scorer_section(scorer_comparison[scorer_comparison["dataset"] == dataset])
    return "\n".join(parts + plots_section(dataset, plots)) + "\n"


def plots_section(dataset: str, plots: dict[str, list[Path]] | None) -> list[str]:
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
        markdown_table(table),
    ]


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
        "Paired: the same runs and the same examples; DeLong's variance, with seeds and "
        f"examples as crossed random effects ({int(comp['seeds'].max())} seeds at most; one "
        "seed: a model-level DeLong test). ▲ better / ▼ worse when the p-value adjusted "
        f"({comp['adjustment'].iat[0]}, per dataset × eval config) is below 0.05; no mark: "
        "not distinguishable; intervals unadjusted 95%. `auroc_error`: "
        "correct vs wrong predictions; `auroc_vs_<id split>`: that split vs the shifted one. "
        "Intervals: `scorer_comparisons.csv`.",
        "",
        markdown_table(wide),
    ]


def index_markdown(
    table: pd.DataFrame,
    skipped: int,
    datasets: list[str],
    html: bool,
    failures: pd.DataFrame,
) -> str:
    """leaderboard/README.md: the runs per dataset, the page, and the failed runs."""
    rows = len(table)
    table = _changes(table, ["dataset", "run_id"])  # the same distinct runs, fewer rows
    index = [
        "# Leaderboards",
        "",
        f"{table['run_id'].nunique()} completed runs, {rows} rows "
        f"({skipped} run directories skipped as incomplete or unreadable).",
        "",
    ]
    runs_per_dataset = table.groupby("dataset")["run_id"].nunique()
    for dataset in datasets:
        index.append(f"- [{dataset}]({dataset}.md): {runs_per_dataset.get(dataset, 0)} runs")
    if html:
        index += ["", "Sortable, filterable tables with the plots: [index.html](index.html)."]
    return "\n".join(index + _failures_section(failures)) + "\n"


def _changes(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """table[columns] without the rows equal to the row before (the store's rows come run
    after run: 100,000 rows, not 5,000,000, for pandas to hash; the same values and pairs)."""
    at = changes(table, columns)
    return table[columns] if at is None else table[columns].take(at)


def _failures_section(failures: pd.DataFrame) -> list[str]:
    if failures.empty:
        return []
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
    return [
        "",
        f"## Failed runs ({len(failures)})",
        "",
        "Rerunning the sweep retries them (`retry_failed=false` skips them). Reasons "
        "and tracebacks: `runs/<run_id>/FAILED`.",
        "",
        markdown_table(per_setting),
    ]
