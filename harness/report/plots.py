"""Plots from the tidy table (matplotlib, object API: no global pyplot state, no display).

Each function returns a Figure (or None when the data has nothing to show) whose artists
carry the data, so tests read the lines and points back; `save` writes PNG and PDF with
no timestamps, so the files are the same for the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from harness.report.aggregate import metric_rows, split_order
from harness.report.corruption import corruption_errors
from harness.report.drawing import draw
from harness.report.figure import figure_legend as _figure_legend
from harness.report.figure import grid as _grid
from harness.report.figure import method_style
from harness.report.palette import method_palette, model_hatches
from harness.report.reliability import reliability, reliability_per_setting
from harness.report.task_aggregates import performance_profiles
from harness.rundir import RunDir, runs_root

PROBIT_TICKS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
EPS = 1e-3  # accuracies are clipped to [EPS, 1-EPS] before the probit


PLOTS_VERSION = 5  # bump when a plot changes, so cached plot files are redrawn
MAX_ENTRIES = 20  # bars and seed spread show at most this many settings (the best ones)
MAX_NAMED = 12  # accuracy on the line: points labelled with their model up to this many


def _label(frame: pd.DataFrame) -> pd.Series:
    return frame["model"].astype(str) + " / " + frame["method"].astype(str)


def _entries(frame: pd.DataFrame) -> pd.Series:
    """model / method, plus the setting (and eval config) where one model / method has several."""
    label = _label(frame)
    several = frame.groupby(label)[["setting_id", "eval_id"]].transform("nunique").max(axis=1) > 1
    suffix = " " + frame["setting_id"].str[:8] + "/" + frame["eval_id"].str[:4]
    return label.where(~several, label + suffix)


def _best_entries(frame: pd.DataFrame, value: str) -> tuple[list[str], int]:
    """The MAX_ENTRIES entries with the highest mean `value` on the ID test split (else the
    first split), and how many entries there were."""
    order = split_order(frame)
    roles = frame.drop_duplicates("split").set_index("split")["split_role"]
    split = next((s for s in order if roles[s] == "id_test"), order[0])
    per = frame.groupby("entry")[value].mean()
    on_split = frame[frame["split"] == split].groupby("entry")[value].mean()
    ranked = on_split.reindex(per.index).fillna(-np.inf).sort_values(ascending=False)
    return sorted(ranked.index[:MAX_ENTRIES]), len(per)


def probit(p: np.ndarray | float) -> np.ndarray:
    return stats.norm.ppf(np.clip(p, EPS, 1 - EPS))


def bars(
    agg: pd.DataFrame,
    metric: str = "accuracy",
    scorer: str = "",
    palette: dict[str, dict[str, str]] | None = None,
) -> Figure | None:
    """Mean per setting and split with its 95% interval as error bars (one dataset's agg);
    the colour says the method (the dataset's palette), the hatch the model."""
    # not per group value: overall rows, and summaries over groups (worst_group_accuracy is
    # stored with its group_key; metric_rows' overall rows would leave it out)
    sel = agg[(agg["metric"] == metric) & (agg["scorer"] == scorer) & (agg["group_value"] == "")]
    if sel.empty:
        return None
    sel = sel.assign(entry=_entries(sel))
    splits = split_order(sel)
    entries, total = _best_entries(sel, "mean")
    # about 0.12 inch per bar, at most 16 inches wide (20 entries × 5 splits: 13 inches)
    bars_wide = 0.12 * len(splits) * max(1, len(entries))
    legend_high = 0.9 + 0.2 * len(entries)  # the legend beside the bars: a line per entry
    fig = Figure(figsize=(min(16.0, max(5.0, 3.0 + bars_wide)), max(3.8, legend_high)))
    ax = fig.add_subplot()
    width = 0.8 / len(entries)
    palette = palette or method_palette(agg["method"])
    hatches = model_hatches(sel["model"])
    who = sel.drop_duplicates("entry").set_index("entry")[["model", "method"]]
    for k, entry in enumerate(entries):
        e = sel[sel["entry"] == entry].set_index("split").reindex(splits)
        x = np.arange(len(splits)) + (k - (len(entries) - 1) / 2) * width
        low = (e["mean"] - e["ci_low"]).to_numpy()
        high = (e["ci_high"] - e["mean"]).to_numpy()
        model, method = who.loc[entry]
        ax.bar(x, e["mean"], width, label=entry, edgecolor="white", lw=0.3,
               color=method_style(palette, method)["color"], hatch=hatches[model])  # fmt: skip
        ax.errorbar(
            x, e["mean"], yerr=np.vstack([low, high]), fmt="none", ecolor="black", capsize=2
        )
    ax.set_xticks(np.arange(len(splits)), splits)
    ax.set_ylabel(metric if not scorer else f"{metric} ({scorer})")
    shown = f" (best {len(entries)} of {total} settings)" if total > len(entries) else ""
    ax.set_title(f"{metric}: mean and 95% interval{shown}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars
    fig.set_layout_engine("constrained")
    return fig


def accuracy_on_the_line(
    table: pd.DataFrame, palette: dict[str, dict[str, str]] | None = None
) -> Figure | None:
    """ID test accuracy vs each shifted split's accuracy, one point per run, probit axes,
    with the least-squares line through the probit values and its R² (one dataset); each
    point is labelled with its model where a panel has at most MAX_NAMED points."""
    acc = metric_rows(table, "accuracy")
    id_acc = acc[acc["split_role"] == "id_test"].groupby("run_id")["value"].mean()
    shifted = acc[acc["split_role"] == "shift_test"]
    if id_acc.empty or shifted.empty:
        return None
    splits = split_order(shifted)
    fig, axes = _grid(len(splits))
    palette = palette or method_palette(table["method"])
    for ax, split in zip(axes, splits, strict=True):
        s = shifted[shifted["split"] == split].set_index("run_id")
        s = s.join(id_acc.rename("id"), how="inner")
        for method, m in s.groupby("method", sort=True):
            style = method_style(palette, method)
            ax.scatter(probit(m["id"]), probit(m["value"]), label=method, s=14, **style)
        if len(s) <= MAX_NAMED:  # few points: say whose they are
            for model, x, y in zip(s["model"], probit(s["id"]), probit(s["value"]), strict=True):
                ax.annotate(str(model), (x, y), xytext=(3, 3), textcoords="offset points",
                            fontsize=6, color="#333")  # fmt: skip
        if len(s) >= 3 and s["id"].nunique() > 1:
            fit = stats.linregress(probit(s["id"]), probit(s["value"]))
            xs = np.linspace(probit(s["id"].min()), probit(s["id"].max()), 50)
            ax.plot(xs, fit.intercept + fit.slope * xs, color="black", lw=1, label="fit")
            ax.set_title(f"{split}: R² = {fit.rvalue**2:.2f} ({len(s)} runs)")
        else:
            ax.set_title(f"{split}: {len(s)} runs (too few for a fit)")
        lo = probit(min(s["id"].min(), s["value"].min()))
        hi = probit(max(s["id"].max(), s["value"].max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls=":", label="y = x")
        ticks = [t for t in PROBIT_TICKS if lo - 0.3 <= probit(t) <= hi + 0.3]
        for setter in (ax.set_xticks, ax.set_yticks):
            setter(probit(np.array(ticks)), [f"{t:g}" for t in ticks])
        ax.set_xlabel("ID test accuracy (probit scale)")
        ax.set_ylabel(f"{split} accuracy (probit scale)")
    _figure_legend(fig, axes)
    return fig


def _group_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Per-group accuracy rows of the finest grouping (the group key with most groups)."""
    g = table[
        (table["metric"] == "accuracy")
        & (table["scorer"] == "")
        & (table["group_key"] != "")
        & (table["group_value"] != "")
    ]
    if g.empty:
        return g
    finest = g.groupby("group_key")["group_value"].nunique().idxmax()
    return g[g["group_key"] == finest]


def accuracy_on_the_curve(
    table: pd.DataFrame, palette: dict[str, dict[str, str]] | None = None
) -> Figure | None:
    """Majority-group vs minority-group accuracy, one point per run and labelled split. A
    group is a majority group when its share of the training split is at least 1/(number of
    groups); each side's accuracy is the example-weighted mean over its groups."""
    g = _group_accuracy(table)
    train = g[g["split_role"] == "train"]
    if train.empty:
        return None
    share = train.groupby("group_value")["n"].mean()
    share = share / share.sum()
    majority = set(share[share >= 1 / len(share)].index)
    if not majority or len(majority) == len(share):
        return None
    tests = g[g["split_role"].isin(["id_test", "shift_test"])]
    if tests.empty:
        return None
    tests = tests.assign(
        side=np.where(tests["group_value"].isin(majority), "majority", "minority"),
        correct=tests["value"] * tests["n"],
    )
    per = tests.groupby(["split", "run_id", "method", "side"])[["correct", "n"]].sum()
    per = (per["correct"] / per["n"]).unstack("side")
    if not {"majority", "minority"} <= set(per.columns):  # e.g. held-out domains: one side only
        return None
    per = per.dropna().reset_index()
    splits = [s for s in split_order(tests) if s in set(per["split"])]
    fig, axes = _grid(len(splits))
    palette = palette or method_palette(table["method"])
    for ax, split in zip(axes, splits, strict=True):
        s = per[per["split"] == split]
        for method, m in s.groupby("method", sort=True):
            ax.scatter(m["majority"], m["minority"], label=method, s=14,
                       **method_style(palette, method))  # fmt: skip
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="y = x")
        ax.set_xlabel("majority-group accuracy")
        ax.set_ylabel("minority-group accuracy")
        ax.set_title(f"{split}: {len(s)} runs")
    _figure_legend(fig, axes)
    return fig


def severity_curves(
    table: pd.DataFrame, palette: dict[str, dict[str, str]] | None = None
) -> Figure | None:
    """Accuracy vs corruption severity, one line per setting: per run the mean over
    corruptions at each severity, then mean and 95% t-interval over seeds. Corruption splits
    are recognised as harness.corruption_metrics does (`<corruption>-<severity>` names, or
    `corruption`/`severity` columns); generated sets get their own lines."""
    by = ["model", "method", "setting_id", "eval_id", "run_id"]
    errors = corruption_errors(table, by=by)
    if errors.empty:
        return None
    errors = errors.assign(accuracy=1 - errors["error"])
    errors = errors.assign(entry=_entries(errors))
    errors.loc[errors["generated"], "entry"] += " (generated)"
    per_run = errors.groupby(["entry", "run_id", "severity"])["accuracy"].mean().reset_index()
    entries = per_run["entry"].nunique()
    # the legend beside the axes (a line per entry), never on the curves
    fig = Figure(figsize=(8.5, max(3.8, 0.9 + 0.2 * entries)), layout="constrained")
    ax = fig.add_subplot()
    palette = palette or method_palette(table["method"])
    methods = errors.drop_duplicates("entry").set_index("entry")["method"]
    models = errors.drop_duplicates("entry").set_index("entry")["model"]
    dashes = {m: ("-", "--", ":", "-.")[k % 4] for k, m in enumerate(sorted(set(models)))}
    for entry, runs in per_run.groupby("entry", sort=True):
        curve = runs.groupby("severity")["accuracy"].agg(["mean", "std", "size"]).sort_index()
        half = stats.t.ppf(0.975, curve["size"] - 1) * curve["std"] / np.sqrt(curve["size"])
        ax.errorbar(curve.index, curve["mean"], yerr=half.fillna(0), label=entry, capsize=2,
                    ls=dashes[models[entry]], **method_style(palette, methods[entry]))  # fmt: skip
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy (mean over corruptions)")
    ax.set_title("accuracy under corruption: mean and 95% interval over seeds")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def risk_coverage(results_dir: str | Path, table: pd.DataFrame, setting_id: str) -> Figure | None:
    """Selective risk vs coverage per scorer for one setting, one panel per labelled test
    split, averaged over its seeds (from each run's risk_coverage/<split>.parquet)."""
    rows = table[table["setting_id"] == setting_id]
    if rows.empty:
        return None
    tests = rows[rows["split_role"].isin(["id_test", "shift_test"])]
    splits = split_order(tests)
    curves = []
    for (run_id, eval_id), _ in rows.groupby(["run_id", "eval_id"]):
        stage = RunDir.at(runs_root(results_dir) / run_id).posthoc(eval_id)
        for split in splits:
            try:
                curves.append(pd.read_parquet(stage.risk_coverage(split)).assign(split=split))
            except (OSError, ValueError):
                continue  # a run without curves contributes none
    if not curves:
        return None
    data = pd.concat(curves).groupby(["split", "scorer", "coverage"])["risk"].mean().reset_index()
    splits = [s for s in splits if s in set(data["split"])]
    fig, axes = _grid(len(splits))
    head = rows.iloc[0]
    scorers = sorted(data["scorer"].unique())  # the same colour and dash in every panel
    for ax, split in zip(axes, splits, strict=True):
        for scorer, curve in data[data["split"] == split].groupby("scorer", sort=True):
            k = scorers.index(scorer)
            dash = ("-", "--", ":", "-.")[(k // 10) % 4]  # ten colours, then another dash
            ax.plot(
                curve["coverage"], curve["risk"], label=scorer, lw=1, color=f"C{k % 10}", ls=dash
            )
        ax.set_xlabel("coverage")
        ax.set_ylabel("selective risk")
        ax.set_title(f"{split}")
    _figure_legend(fig, axes)  # below the panels, never on the curves
    fig.suptitle(f"risk–coverage: {head['model']} / {head['method']} ({setting_id[:8]})")
    return fig


def seed_spread(
    table: pd.DataFrame, metric: str = "accuracy", palette: dict[str, dict[str, str]] | None = None
) -> Figure | None:
    """Every seed's value per setting (points) and their mean (a black tick), one panel per
    split, settings on the y axis: the variance between runs is itself a result."""
    sel = metric_rows(table, metric)
    if sel.empty:
        return None
    sel = sel.assign(entry=_entries(sel))
    splits = split_order(sel)
    entries, total = _best_entries(sel, "value")
    sel = sel[sel["entry"].isin(entries)]
    row_of = {entry: k for k, entry in enumerate(entries)}
    palette = palette or method_palette(table["method"])
    fig, axes = _grid(len(splits), width=3.2, height=1.2 + 0.25 * len(entries), sharey=True)
    for ax, split in zip(axes, splits, strict=True):
        s = sel[sel["split"] == split]
        rows = s["entry"].map(row_of).to_numpy()
        values = s["value"].to_numpy()
        colours = [method_style(palette, m)["color"] for m in s["method"]]
        ax.scatter(values, rows, s=12, c=colours, label="seeds")
        means = s.groupby("entry")["value"].mean()
        ax.scatter(means, means.index.map(row_of), marker="|", s=160, color="black", label="mean")
        ax.set_xlabel(metric)
        ax.set_title(split)
    axes[0].set_yticks(range(len(entries)), entries, fontsize="small")
    axes[0].invert_yaxis()  # the first entry on top
    shown = f", best {len(entries)} of {total} settings" if total > len(entries) else ""
    fig.suptitle(f"{metric} per seed{shown}")
    return fig


def plot_builders(
    table: pd.DataFrame,
    agg: pd.DataFrame,
    results_dir: str | Path,
    primary_metric: str = "accuracy",
    baseline: str = "erm",
) -> dict[str, Callable[[], Figure | None]]:
    """name -> a function that builds that plot of one dataset's rows (None: nothing to show).
    Every plot of the dataset gets the same method palette (harness/report/palette.py)."""
    palette = method_palette(pd.concat([table["method"], agg["method"]]).unique())
    builders: dict[str, Callable[[], Figure | None]] = {
        f"bars_{primary_metric}": partial(bars, agg, primary_metric, palette=palette),
        "accuracy_on_the_line": partial(accuracy_on_the_line, table, palette),
        "accuracy_on_the_curve": partial(accuracy_on_the_curve, table, palette),
        "severity_curves": partial(severity_curves, table, palette),
        f"seed_spread_{primary_metric}": partial(seed_spread, table, primary_metric, palette),
        # over the shifted splits (harness/report/task_aggregates.py): None with fewer than 2
        f"performance_profile_{primary_metric}": partial(
            performance_profiles, table, primary_metric, palette
        ),
    }
    if "worst_group_accuracy" in set(agg["metric"]) and primary_metric != "worst_group_accuracy":
        builders["bars_worst_group_accuracy"] = partial(
            bars, agg, "worst_group_accuracy", palette=palette
        )
    if not table.empty:
        counts = table.groupby(["setting_id", "method"])["seed"].nunique().reset_index()
        counts = counts.sort_values(["seed", "setting_id"], ascending=[False, True])
        preferred = counts[counts["method"] == baseline]
        setting = (preferred if not preferred.empty else counts)["setting_id"].iat[0]
        builders["risk_coverage"] = partial(risk_coverage, results_dir, table, setting)
        builders["reliability"] = partial(reliability, results_dir, table, setting)
        builders["reliability_per_setting"] = partial(reliability_per_setting, results_dir, table)
    return builders


def dataset_plots(
    table: pd.DataFrame,
    agg: pd.DataFrame,
    results_dir: str | Path,
    out_dir: str | Path,
    primary_metric: str = "accuracy",
    baseline: str = "erm",
    workers: int = 1,
) -> dict[str, list[Path]]:
    """Every plot that the dataset's rows support; returns name -> [png, pdf]."""
    builders = plot_builders(table, agg, results_dir, primary_metric, baseline)
    drawn = draw({Path(out_dir) / name: build for name, build in builders.items()}, workers)
    return {stem.name: paths for stem, paths in drawn.items()}
