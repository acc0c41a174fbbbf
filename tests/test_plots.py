"""Plots: the figures' data (points, lines, labels), not pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.report import drawing, plots
from harness.report.aggregate import aggregate

BASE = {
    "dataset": "d",
    "model": "m",
    "tta": "",
    "scorer": "",
    "eval_id": "e",
    "selection_rule": "id_val_accuracy",
    "group_key": "",
    "group_value": "",
    "n": 100,
}


def row(run, method, seed, split, role, value, **extra):
    return {
        **BASE,
        "run_id": run,
        "setting_id": f"s_{method}",
        "method": method,
        "seed": seed,
        "split": split,
        "split_role": role,
        "metric": "accuracy",
        "value": value,
        **extra,
    }


def line_table():
    """Shifted accuracy exactly on a probit line: probit(shift) = 1.2 probit(id) - 0.5."""
    rows = []
    for k, id_acc in enumerate(np.linspace(0.6, 0.95, 6)):
        method = "erm" if k % 2 else "mixup"
        shift = float(plots.stats.norm.cdf(1.2 * plots.probit(id_acc) - 0.5))
        rows += [
            row(f"r{k}", method, k, "test", "id_test", id_acc),
            row(f"r{k}", method, k, "far", "shift_test", shift),
        ]
    return pd.DataFrame(rows)


def test_accuracy_on_the_line_plots_probit_points_and_the_exact_fit():
    t = line_table()
    fig = plots.accuracy_on_the_line(t)
    [ax] = fig.axes
    assert ax.get_title().startswith("far: R² = 1.00 (6 runs)")
    points = np.vstack([c.get_offsets() for c in ax.collections])
    ids = t[t["split"] == "test"]["value"].to_numpy()
    assert sorted(points[:, 0]) == pytest.approx(sorted(plots.probit(ids)))
    fit = next(line for line in ax.lines if line.get_label() == "fit")
    x, y = fit.get_data()
    assert np.polyfit(x, y, 1) == pytest.approx([1.2, -0.5], abs=1e-6)
    assert {c.get_label() for c in ax.collections} == {"erm", "mixup"}


def test_bars_are_the_means_with_their_intervals():
    t = pd.DataFrame(
        [
            row(f"{m}{s}", m, s, "test", "id_test", v)
            for m, vals in (("erm", [0.8, 0.9, 0.85]), ("mixup", [0.7, 0.75, 0.8]))
            for s, v in enumerate(vals)
        ]
    )
    agg = aggregate(t)
    fig = plots.bars(agg)
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == pytest.approx([0.75, 0.85])
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    spans = sorted((seg[0][1], seg[1][1]) for seg in segments)
    expected = sorted(zip(agg["ci_low"], agg["ci_high"], strict=True))
    assert np.array(spans) == pytest.approx(np.array(expected))


def test_accuracy_on_the_curve_weights_groups_by_size_and_splits_majority_by_train_share():
    rows = []
    # train shares: g0 45%, g1 45% (majority), g2 5%, g3 5% (minority)
    for run, method in (("a", "erm"), ("b", "group_dro")):
        for g, n in (("0", 90), ("1", 90), ("2", 10), ("3", 10)):
            rows.append(
                row(
                    run,
                    method,
                    0,
                    "train",
                    "train",
                    1.0,
                    group_key="label|colour",
                    group_value=g,
                    n=n,
                )
            )
        for g, acc, n in (("0", 0.9, 10), ("1", 0.8, 30), ("2", 0.2, 10), ("3", 0.6, 30)):
            acc = acc if run == "a" else acc / 2
            rows.append(
                row(
                    run,
                    method,
                    0,
                    "balanced",
                    "shift_test",
                    acc,
                    group_key="label|colour",
                    group_value=g,
                    n=n,
                )
            )
    fig = plots.accuracy_on_the_curve(pd.DataFrame(rows))
    [ax] = fig.axes
    points = {c.get_label(): list(c.get_offsets()[0]) for c in ax.collections}
    major, minor = (0.9 * 10 + 0.8 * 30) / 40, (0.2 * 10 + 0.6 * 30) / 40
    assert points["erm"] == pytest.approx([major, minor])
    assert points["group_dro"] == pytest.approx([major / 2, minor / 2])


def test_severity_curves_average_corruptions_then_seeds():
    rows = []
    for seed in (0, 1):
        rows.append(row(f"r{seed}", "erm", seed, "test", "id_test", 0.95))
        for corruption, offset in (("gaussian_noise", 0.0), ("motion_blur", 0.1)):
            for sev in (1, 2, 3):
                value = 0.9 - 0.1 * sev + offset + 0.02 * seed
                rows.append(
                    row(f"r{seed}", "erm", seed, f"{corruption}-{sev}", "shift_test", value)
                )
                # a generated set of the same corruption is a line of its own
                rows.append(
                    row(f"r{seed}", "erm", seed, f"gen-{corruption}-{sev}", "shift_test", 0.5)
                )
    fig = plots.severity_curves(pd.DataFrame(rows))
    lines = {c.get_label(): c for c in fig.axes[0].containers}
    released = fig.axes[0].lines[0].get_data()
    assert list(released[0]) == [1, 2, 3]
    assert released[1] == pytest.approx([0.9 - 0.1 * s + 0.05 + 0.01 for s in (1, 2, 3)])
    assert set(lines) == {"m / erm", "m / erm (generated)"}


def test_seed_spread_shows_every_seed():
    t = pd.DataFrame([row(f"r{s}", "erm", s, "test", "id_test", 0.5 + s / 10) for s in range(5)])
    fig = plots.seed_spread(t)
    [ax] = fig.axes
    seeds, mean = ax.collections  # settings on the y axis, values on the x axis
    assert sorted(seeds.get_offsets()[:, 0]) == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert np.asarray(mean.get_offsets())[:, 0].tolist() == pytest.approx([0.7])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["m / erm"]


def test_risk_coverage_averages_each_scorer_over_the_settings_seeds(tmp_path):
    rows = []
    for seed, risk in ((0, 0.1), (1, 0.3)):
        rows.append(row(f"r{seed}", "erm", seed, "test", "id_test", 0.9))
        folder = tmp_path / "runs" / f"r{seed}" / "posthoc" / "e" / "risk_coverage"
        folder.mkdir(parents=True)
        pd.DataFrame(
            {
                "scorer": ["msp"] * 2 + ["energy"] * 2,
                "coverage": [0.5, 1.0] * 2,
                "risk": [risk, 2 * risk, risk / 2, risk],
            }
        ).to_parquet(folder / "test.parquet")
    fig = plots.risk_coverage(tmp_path, pd.DataFrame(rows), "s_erm")
    lines = {line.get_label(): line.get_data()[1] for line in fig.axes[0].lines}
    assert lines["msp"] == pytest.approx([0.2, 0.4])
    assert lines["energy"] == pytest.approx([0.1, 0.2])


def test_saved_files_are_the_same_for_the_same_data(tmp_path):
    t = line_table()
    first = drawing.save(plots.accuracy_on_the_line(t), tmp_path / "a")
    second = drawing.save(plots.accuracy_on_the_line(t), tmp_path / "b")
    for p, q in zip(first, second, strict=True):
        assert p.read_bytes() == q.read_bytes()
    assert [p.suffix for p in first] == [".png", ".pdf"]


def test_nothing_to_show_gives_no_figure():
    t = pd.DataFrame([row("r0", "erm", 0, "test", "id_test", 0.9)])
    assert plots.accuracy_on_the_line(t) is None  # no shifted split
    assert plots.accuracy_on_the_curve(t) is None  # no groups
    assert plots.severity_curves(t) is None


def test_many_settings_show_the_best_ones_each_labelled_by_setting():
    rows = []
    for k in range(plots.MAX_ENTRIES + 5):  # one method, many hyperparameter settings
        for seed in (0, 1):
            r = row(f"r{k}-{seed}", "erm", seed, "test", "id_test", k / 100)
            rows.append({**r, "setting_id": f"set{k:03d}xyzw"})
    t = pd.DataFrame(rows)
    fig = plots.bars(aggregate(t))
    ax = fig.axes[0]
    assert len(ax.patches) == plots.MAX_ENTRIES
    assert min(p.get_height() for p in ax.patches) == pytest.approx(0.05)  # the 5 worst left out
    assert "best 20 of 25 settings" in ax.get_title()
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert "m / erm set024xy/e" in labels
    spread = plots.seed_spread(t)
    ax = spread.axes[0]
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert len(shown) == plots.MAX_ENTRIES and "m / erm set024xy/e" in shown
    assert "m / erm set004xy/e" not in shown  # one of the 5 worst
    seeds = ax.collections[0].get_offsets()
    assert len(seeds) == 2 * plots.MAX_ENTRIES  # both seeds of every shown setting
    assert seeds[:, 0].min() == pytest.approx(0.05)


def test_drawing_in_worker_processes_writes_the_same_files(tmp_path):
    t = line_table()
    agg = aggregate(t)
    serial = plots.dataset_plots(t, agg, tmp_path, tmp_path / "serial")
    parallel = plots.dataset_plots(t, agg, tmp_path, tmp_path / "parallel", workers=2)
    assert serial.keys() == parallel.keys() and "accuracy_on_the_line" in serial
    assert "severity_curves" not in serial  # nothing to show: no file, no entry
    for name, paths in serial.items():
        for p, q in zip(paths, parallel[name], strict=True):
            assert p.name == q.name and p.read_bytes() == q.read_bytes()


def test_a_failing_plot_in_a_worker_is_raised_here(tmp_path):
    def broken():
        raise ValueError("bad plot data")

    with pytest.raises(ValueError, match="bad plot data"):
        drawing.draw({tmp_path / "a": broken, tmp_path / "b": broken}, workers=2)


def test_reliability_bins_accuracy_against_confidence_and_gives_the_ece(tmp_path):
    rng = np.random.default_rng(4)
    rows, pooled = [], []
    for seed in (0, 1):
        rows.append(row(f"r{seed}", "erm", seed, "test", "id_test", 0.9))
        folder = tmp_path / "runs" / f"r{seed}" / "posthoc" / "e" / "scores"
        folder.mkdir(parents=True)
        msp = rng.uniform(0.05, 1.0, 300)
        frame = pd.DataFrame({"msp": msp, "correct": rng.random(300) < msp**2})
        frame.to_parquet(folder / "test.parquet")
        pooled.append(frame)
    fig = plots.reliability(tmp_path, pd.DataFrame(rows), "s_erm")
    data = pd.concat(pooled)
    conf, correct = data["msp"].to_numpy(), data["correct"].to_numpy()
    edges = np.linspace(0, 1, 16)
    heights, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            heights.append(correct[inside].mean())
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx(heights)
    assert f"ECE {ece:.3f} (600 examples)" in ax.get_title()
