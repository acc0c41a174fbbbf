"""Aggregates over the shifted test splits of a dataset, as rliable computes them
(harness.stats.aggregate): `aggregates.csv` (opt-in: `aggregates: true`) and the
performance-profile plot.

Tasks are the splits of role `shift_test` of one dataset × model × eval config, on one
metric (the dataset's primary one); derived rows (pooled splits, near / far means) have
other roles and are never tasks. Runs are the seeds that have a value on every task. Rows of
dataset `all` aggregate over datasets sharing the model, eval config and metric (tasks:
(dataset, split) pairs; cross_dataset_rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.report.aggregate import metric_rows
from harness.stats.aggregate import (
    MIN_RUNS,
    improvement_interval,
    iqm_interval,
    iqm_of_each,
    performance_profile,
    profile_band,
)

TASK_ROLE = "shift_test"
AGGREGATE_COLUMNS = [
    "dataset",
    "model",
    "eval_id",
    "metric",
    "method",
    "setting_id",
    "statistic",
    "versus",
    "tasks",
    "runs",
    "value",
    "ci_low",
    "ci_high",
    "interval",
    "task_names",
]
MAX_PROFILES = 8  # lines in one profile plot: the settings with the highest IQM


def task_values(table: pd.DataFrame, metric: str) -> dict[tuple, dict[str, pd.DataFrame]]:
    """(dataset, model, eval_id) -> setting_id -> a (seeds × tasks) frame of `metric` on
    the shift_test splits; seeds missing a task are left out, settings without a full
    seed are left out."""
    rows = metric_rows(table, metric)
    if "split_role" in rows:
        rows = rows[rows["split_role"] == TASK_ROLE]
    out: dict[tuple, dict[str, pd.DataFrame]] = {}
    for (dataset, model, eval_id), group in rows.groupby(["dataset", "model", "eval_id"]):
        tasks = sorted(group["split"].unique())
        # one pivot for every setting of the group, then cut per setting: a pivot per
        # setting cost ~6 ms each, 6 s of the plots at 1,000 settings
        every = group.pivot_table(
            index=["setting_id", "seed"], columns="split", values="value", aggfunc="first"
        )
        every = every.reindex(columns=tasks).dropna()
        for setting_id, wide in every.groupby(level="setting_id", sort=True):
            out.setdefault((dataset, model, eval_id), {})[setting_id] = wide.droplevel("setting_id")
    return out


def setting_names(table: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """setting_id -> (method, TTA or "") of its first row (a loop over the settings' groups
    cost 0.4 s at 1,000 settings)."""
    first = table[table["setting_id"].notna()].drop_duplicates("setting_id")
    ttas = first["tta"].tolist() if "tta" in first else [""] * len(first)
    ttas = ["" if pd.isna(t) or t in ("", "none") else str(t) for t in ttas]
    methods = [str(m) for m in first["method"].tolist()]
    return dict(zip(first["setting_id"].tolist(), zip(methods, ttas, strict=True), strict=True))


def aggregates_table(
    table: pd.DataFrame, metric_of: dict[str, str], baseline: str = "erm"
) -> pd.DataFrame:
    """Per dataset × model × eval config and setting: the IQM of its runs × shifted splits
    (statistic `iqm`) and, for every setting but the baseline method's, its probability of
    improvement over the baseline (`probability_of_improvement`, versus the baseline), each
    with a stratified bootstrap interval (expanded percentile; none with fewer than 5 runs
    per task). Then the rows across datasets (dataset `all`, cross_dataset_rows).
    `metric_of`: dataset -> the metric (its primary one)."""
    out = []
    for dataset, metric in sorted(metric_of.items()):
        sub = table[table["dataset"] == dataset]
        names = setting_names(sub)
        for (_, model, eval_id), settings in sorted(task_values(sub, metric).items()):
            base = [sid for sid in settings if names[sid] == (baseline, "")]
            for setting_id, wide in sorted(settings.items()):
                other = settings[base[0]] if len(base) == 1 and setting_id != base[0] else None
                common = {"dataset": dataset, "model": model, "eval_id": eval_id}
                common.update(metric=metric, setting_id=setting_id)
                out += _rows(common, names[setting_id], wide, other, baseline)
    out += cross_dataset_rows(table, metric_of, baseline)
    return pd.DataFrame(out, columns=AGGREGATE_COLUMNS)


CROSS_DATASET = "all"  # the dataset column of a row aggregated over datasets


def cross_dataset_rows(
    table: pd.DataFrame, metric_of: dict[str, str], baseline: str = "erm"
) -> list[dict]:
    """Rows over datasets (dataset `all`): per model × eval config × metric shared by at
    least two datasets (as their primary metric), the tasks are the (dataset, shifted split)
    pairs, named `dataset/split`; derived rows (pooled, near/far means) have other roles and
    are never tasks. A method (and its TTA) takes part when it has exactly one setting in
    each of these datasets (several, without model_selection, would be ambiguous) with a
    value on every task; its runs are the seeds present on every task of every dataset.
    Settings of one method are matched by name across datasets: their setting_ids differ,
    and the row's setting_id joins them with `|` in the datasets' order."""
    groups: dict[tuple, dict[tuple, dict[str, list]]] = {}
    for dataset, metric in sorted(metric_of.items()):
        sub = table[table["dataset"] == dataset]
        names = setting_names(sub)
        for (_, model, eval_id), settings in task_values(sub, metric).items():
            for setting_id, wide in settings.items():
                by_name = groups.setdefault((model, eval_id, metric), {})
                by_name.setdefault(names[setting_id], {}).setdefault(dataset, []).append(
                    (setting_id, wide.rename(columns=lambda c, d=dataset: f"{d}/{c}"))
                )
    out = []
    for (model, eval_id, metric), by_name in sorted(groups.items()):
        datasets = sorted({d for by_dataset in by_name.values() for d in by_dataset})
        if len(datasets) < 2:
            continue
        joined = {}
        for name, by_dataset in by_name.items():
            if sorted(by_dataset) != datasets or any(len(v) != 1 for v in by_dataset.values()):
                continue
            frames = [by_dataset[d][0][1] for d in datasets]
            wide = pd.concat(frames, axis=1, join="inner").dropna()
            if len(wide):
                joined[name] = ("|".join(by_dataset[d][0][0] for d in datasets), wide)
        base = joined.get((baseline, ""))
        for name, (setting_id, wide) in sorted(joined.items()):
            other = base[1] if base is not None and name != (baseline, "") else None
            common = {"dataset": CROSS_DATASET, "model": model, "eval_id": eval_id}
            common.update(metric=metric, setting_id=setting_id)
            out += _rows(common, name, wide, other, baseline)
    return out


def _rows(
    common: dict,
    name: tuple[str, str],
    wide: pd.DataFrame,
    other: pd.DataFrame | None,
    baseline: str,
) -> list[dict]:
    """The iqm row of one setting's (runs × tasks) frame and, with the baseline's frame
    (`other`, the same tasks), its probability_of_improvement row."""
    method, tta = name
    common = {
        **common,
        "method": method + (f"+{tta}" if tta else ""),
        "tasks": wide.shape[1],
        "task_names": "|".join(wide.columns),
    }
    results = [("iqm", "", iqm_interval(wide.to_numpy()))]
    if other is not None:
        other = other.reindex(columns=wide.columns)
        improvement = improvement_interval(wide.to_numpy(), other.to_numpy())
        results.append(("probability_of_improvement", baseline, improvement))
    return [
        {
            **common,
            "statistic": statistic,
            "versus": versus,
            "runs": r.runs,
            "value": r.value,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "interval": r.interval,
        }
        for statistic, versus, r in results
    ]


def performance_profiles(
    table: pd.DataFrame,
    metric: str = "accuracy",
    palette: dict[str, dict[str, str]] | None = None,
) -> Figure | None:
    """Performance profiles (Agarwal et al. 2021): per model × eval config, the share of
    runs × shifted splits whose `metric` exceeds each threshold, one line per setting (the
    MAX_PROFILES with the highest IQM), with a 95% stratified bootstrap band when every
    task has at least 5 runs. None without two shifted splits."""
    groups = {k: v for k, v in task_values(table, metric).items() if _tasks(v) >= 2}
    if not groups:
        return None
    names = setting_names(table)
    label_of = {sid: m + (f"+{t}" if t else "") for sid, (m, t) in names.items()}
    shown = {key: _best(settings) for key, settings in groups.items()}
    # one colour per method across panels (the dataset's method palette when given, as in
    # every other plot; settings of one method then differ by line style), one legend
    labels = sorted({label_of[s] for ids in shown.values() for s in ids})
    method_of = {label_of[s]: names[s][0] for ids in shown.values() for s in ids}
    colours, styles, seen = {}, {}, {}
    for k, label in enumerate(labels):
        method = method_of[label]
        entry = (palette or {}).get(str(method))
        colours[label] = entry["color"] if entry else f"C{k % 10}"
        styles[label] = ("-", "--", ":", "-.")[seen.get(method, 0) % 4] if entry else "-"
        seen[method] = seen.get(method, 0) + 1
    cols = min(len(groups), 3)
    rows = int(np.ceil(len(groups) / cols))
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    for ax, (key, settings) in zip(axes, sorted(groups.items()), strict=False):
        values = np.concatenate([w.to_numpy().ravel() for w in settings.values()])
        tau = np.linspace(values.min(), values.max(), 101)
        for setting_id in shown[key]:
            wide = settings[setting_id].to_numpy()
            colour = colours[label_of[setting_id]]
            ax.plot(
                tau,
                performance_profile(wide, tau),
                color=colour,
                linestyle=styles[label_of[setting_id]],
                label=label_of[setting_id],
            )
            if wide.shape[0] >= MIN_RUNS:
                low, high = profile_band(wide, tau)
                ax.fill_between(tau, low, high, color=colour, alpha=0.2, lw=0)
        ax.set_xlabel(f"{metric} threshold τ")
        ax.set_ylabel("share > τ")
        ax.set_ylim(0, 1.02)
        more = f", best {MAX_PROFILES} of {len(settings)}" if len(settings) > MAX_PROFILES else ""
        ax.set_title(f"{key[1]} ({key[2][:4]}){more}", fontsize="medium")
    handles = {}
    for ax in axes[: len(groups)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        list(handles.values()), list(handles), loc="outside lower center", ncols=4,
        fontsize="small",
    )  # fmt: skip
    tasks = _tasks(next(iter(groups.values())))
    fig.suptitle(f"performance profiles: share of runs × {tasks} shifted splits above τ")
    return fig


def _best(settings: dict[str, pd.DataFrame]) -> list[str]:
    """The MAX_PROFILES settings with the highest IQM (ties in the settings' order)."""
    score = dict(zip(settings, iqm_of_each([w.to_numpy() for w in settings.values()]),
                     strict=True))  # fmt: skip
    return sorted(settings, key=lambda s: -score[s])[:MAX_PROFILES]


def _tasks(settings: dict[str, pd.DataFrame]) -> int:
    return max(w.shape[1] for w in settings.values())
