"""Reliability diagrams: the baseline setting's per test split (`reliability`), and one
panel per setting on one split (`reliability_per_setting`, small multiples, capped), from
the runs' per-example scores (MSP, `correct`), the setting's seeds pooled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.report.aggregate import split_order
from harness.report.figure import figure_legend as _figure_legend
from harness.report.figure import grid as _grid
from harness.rundir import RunDir, runs_root, stages_with_scores

MAX_SETTINGS = 12  # reliability_per_setting: panels at most (settings with most seeds first)


def _scores(
    results_dir: str | Path, runs: list[tuple[str, str]], splits: list[str]
) -> pd.DataFrame:
    """MSP and correctness of every example of `runs` ((run_id, eval_id) pairs) on `splits`
    (a column split)."""
    frames = []
    for run_id, eval_id in runs:
        for split in splits:
            path = RunDir.at(runs_root(results_dir) / run_id).posthoc(eval_id).scores(split)
            if not path.is_file():  # pruned or never written: one stat, not a failed read
                continue
            try:
                scores = pd.read_parquet(path, columns=["msp", "correct"])
            except (OSError, ValueError, KeyError):
                continue  # unreadable, or no MSP column: nothing to draw
            frames.append(scores.assign(split=split))
    return pd.concat(frames) if frames else pd.DataFrame(columns=["msp", "correct", "split"])


def _runs(rows: pd.DataFrame) -> list[tuple[str, str]]:
    return list(rows[["run_id", "eval_id"]].drop_duplicates().itertuples(index=False, name=None))


def _panel(ax, d: pd.DataFrame, bins: int) -> float:
    """Bars of accuracy per equal-width confidence bin, the bins' mean confidence and the
    diagonal; returns the ECE over those bins."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, d["msp"].to_numpy(), side="left") - 1, 0, bins - 1)
    per = (
        d.assign(bin=which)
        .groupby("bin")
        .agg(confidence=("msp", "mean"), accuracy=("correct", "mean"), n=("msp", "size"))
    )
    ece = float((per["n"] * (per["accuracy"] - per["confidence"]).abs()).sum() / len(d))
    ax.bar(edges[per.index] + 0.5 / bins, per["accuracy"], width=1 / bins, color="C0",
           edgecolor="white", label="accuracy")  # fmt: skip
    ax.plot(per["confidence"], per["accuracy"], "o", color="C1", ms=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (MSP)")
    ax.set_ylabel("accuracy")
    return ece


def reliability(
    results_dir: str | Path, table: pd.DataFrame, setting_id: str, bins: int = 15
) -> Figure | None:
    """Reliability diagram of one setting: per labelled test split, the accuracy of the
    examples in each equal-width bin of confidence (MSP, from each run's per-example scores,
    the setting's seeds pooled) against the bin's mean confidence, with the diagonal; the
    title gives the pooled ECE over those bins."""
    rows = table[table["setting_id"] == setting_id]
    tests = rows[rows["split_role"].isin(["id_test", "shift_test"])]
    data = _scores(results_dir, _runs(rows), split_order(tests))
    if data.empty:
        return None
    splits = [s for s in split_order(tests) if s in set(data["split"])]
    fig, axes = _grid(len(splits), width=3.6, height=3.6)
    for ax, split in zip(axes, splits, strict=True):
        d = data[data["split"] == split]
        ece = _panel(ax, d, bins)
        ax.set_title(f"{split}: ECE {ece:.3f} ({len(d)} examples)")
    head = rows.iloc[0]
    fig.suptitle(f"reliability: {head['model']} / {head['method']} ({setting_id[:8]})")
    _figure_legend(fig, axes)
    return fig


def reliability_per_setting(
    results_dir: str | Path, table: pd.DataFrame, split: str | None = None, bins: int = 15
) -> Figure | None:
    """Small multiples: one reliability diagram per setting on `split` (None: the ID test
    split, else the first test split), seeds pooled, at most MAX_SETTINGS panels (the
    settings with most seeds, then by name); settings without per-example scores are left
    out. Titles: model / method (setting), ECE."""
    tests = table[table["split_role"].isin(["id_test", "shift_test"])]
    if tests.empty:
        return None
    roles = tests.drop_duplicates("split").set_index("split")["split_role"]
    order = split_order(tests)
    split = split or next((s for s in order if roles[s] == "id_test"), order[0])
    # one pass over one row per run and eval config: pandas per setting cost 10 s for 1,000
    runs = table.drop_duplicates(["setting_id", "run_id", "eval_id"])
    per_setting: dict[str, list] = {}
    for r in runs[["setting_id", "run_id", "eval_id", "seed", "model", "method"]].itertuples(
        index=False
    ):
        per_setting.setdefault(r.setting_id, []).append(r)
    # the settings with most seeds first, then by name
    order = sorted(per_setting, key=lambda k: (-len({r.seed for r in per_setting[k]}), k))
    # which stages kept per-example scores, one stat each: a store whose scores were pruned
    # made a path per run checked setting after setting (11 of 33 s of a dataset's plots
    # at 100,000 runs, under cProfile)
    stages = list(zip(runs["run_id"].tolist(), runs["eval_id"].tolist(), strict=True))
    kept = dict(zip(stages, stages_with_scores(results_dir, stages), strict=True))
    panels = []
    for setting_id in order:
        members = per_setting[setting_id]
        scored = [(r.run_id, r.eval_id) for r in members if kept[(r.run_id, r.eval_id)]]
        if not scored:
            continue
        data = _scores(results_dir, scored, [split])
        if not data.empty:
            head = members[0]
            panels.append(({"model": head.model, "method": head.method,
                            "setting_id": setting_id}, data))  # fmt: skip
        if len(panels) == MAX_SETTINGS:
            break
    if not panels:
        return None
    fig, axes = _grid(len(panels), width=3.2, height=3.2, sharey=True)
    for ax, (head, data) in zip(axes, panels, strict=True):
        ece = _panel(ax, data, bins)
        ax.set_title(
            f"{head['model']} / {head['method']} ({head['setting_id'][:8]})\nECE {ece:.3f}",
            fontsize="small",
        )
    shown = f", {len(panels)} of {len(order)} settings" if len(order) > len(panels) else ""
    fig.suptitle(f"reliability per setting on {split} (MSP, seeds pooled{shown})")
    _figure_legend(fig, axes)
    return fig
