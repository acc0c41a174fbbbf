"""Every plot kind the leaderboard draws (harness.report.plots.plot_builders: plots added later
are covered too), drawn for a 20-setting, 8-split store: no two tick labels of an axis
overlap, and no legend covers an axes' data area (matplotlib's renderer gives the boxes)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from harness.report.aggregate import aggregate
from harness.report.plots import plot_builders

SPLITS = [  # eight splits besides train (which accuracy_on_the_curve needs)
    ("train", "train"),
    ("val", "val"),
    ("id_test", "id_test"),
    ("grid8", "shift_test"),
    ("percolation", "shift_test"),
    ("wilson", "shift_test"),
    ("gaussian_noise-3", "shift_test"),
    ("gaussian_noise-5", "shift_test"),
    ("defocus_blur-3", "shift_test"),
]
METHODS = ["erm", "label_smoothing", "group_dro", "mixup", "jtt"]
MODELS = ["resnet18", "vit_small_patch16_224", "convnext_tiny", "efficientnet_b0"]


def store(tmp_path) -> pd.DataFrame:
    """A tidy table: 4 models × 5 methods (20 settings), 3 seeds, 8 splits, per-group rows."""
    rng = np.random.default_rng(0)
    rows = []
    for (model, method), seed in itertools.product(itertools.product(MODELS, METHODS), range(3)):
        setting = f"{model[:4]}{method[:4]}".ljust(20, "0")
        run_id = f"{setting}-{seed}"
        base_acc = rng.uniform(0.6, 0.95)
        for split, role in SPLITS:
            acc = float(
                np.clip(base_acc - (0.2 if role == "shift_test" else 0) + rng.normal(0, 0.02), 0, 1)
            )
            common = {
                "run_id": run_id, "setting_id": setting, "dataset": "toy", "model": model,
                "method": method, "tta": "", "augment": "", "seed": seed, "split": split,
                "split_role": role, "eval_id": "e" * 16, "selection_rule": "id_val_accuracy",
                "n": 100,
            }  # fmt: skip
            rows.append({**common, "scorer": "", "metric": "accuracy", "group_key": "",
                         "group_value": "", "value": acc})  # fmt: skip
            for g, share in ((0, 0.8), (1, 0.2)):
                rows.append({**common, "scorer": "", "metric": "accuracy", "group_key": "group",
                             "group_value": str(g), "value": acc - 0.1 * g, "n": int(100 * share)})  # fmt: skip
            rows.append({**common, "scorer": "", "metric": "worst_group_accuracy",
                         "group_key": "group", "group_value": "", "value": acc - 0.1})  # fmt: skip
    table = pd.DataFrame(rows)
    if tmp_path is not None:  # risk-coverage curves of 13 scorers for the baseline's runs
        scorers = ["msp", "maxlogit", "energy", "entropy", "mahalanobis", "rel_mahalanobis",
                   "knn", "vim", "react", "ash", "scale", "scod", "gen"]  # fmt: skip
        coverage = np.linspace(0.01, 1, 50)
        for run_id in table.loc[table["method"] == "erm", "run_id"].unique():
            folder = tmp_path / "runs" / run_id / "posthoc" / ("e" * 16) / "risk_coverage"
            folder.mkdir(parents=True)
            for split, role in SPLITS:
                if role in ("id_test", "shift_test"):
                    pd.DataFrame(
                        {
                            "scorer": np.repeat(scorers, len(coverage)),
                            "coverage": np.tile(coverage, len(scorers)),
                            "risk": np.concatenate(
                                [coverage * rng.uniform(0.1, 0.4) for _ in scorers]
                            ),
                        }
                    ).to_parquet(folder / f"{split}.parquet")
                    scores = folder.parent / "scores"
                    scores.mkdir(exist_ok=True)
                    msp = rng.uniform(0.1, 1.0, 200)
                    pd.DataFrame({"msp": msp, "correct": rng.random(200) < msp}).to_parquet(
                        scores / f"{split}.parquet"
                    )
    return table


def boxes(renderer, artists):
    return [a.get_window_extent(renderer) for a in artists if a.get_visible() and a.get_text()]


def overlapping(bbs) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i, j in itertools.combinations(range(len(bbs)), 2)
        if bbs[i].overlaps(bbs[j]) and bbs[i].width > 0 and bbs[j].width > 0
    ]


def test_the_builders_cover_every_plot_function_of_the_module():
    import inspect

    from harness.report import plots, reliability

    drawn = {
        name
        for module in (plots, reliability)
        for name, f in inspect.getmembers(module, inspect.isfunction)
        if f.__module__ == module.__name__
        and not name.startswith("_")
        and inspect.signature(f).return_annotation in ("Figure | None", "Figure")
    }
    table = store(None)
    agg = aggregate(table)
    used = {
        getattr(b, "func", b).__name__ for b in plot_builders(table, agg, ".", "accuracy").values()
    }
    assert drawn <= used | {"risk_coverage"}, drawn - used


def registered_names() -> list[str]:
    """Every plot kind plot_builders draws for the store (plots added later included)."""
    table = store(None)
    return list(plot_builders(table, aggregate(table), ".", "accuracy"))


@pytest.mark.parametrize("name", registered_names())
def test_no_overlapping_tick_labels_and_legends_outside_the_data(name, tmp_path):
    table = store(tmp_path)
    builders = plot_builders(table, aggregate(table), tmp_path, "accuracy")
    assert name in builders
    fig = builders[name]()
    assert fig is not None, f"{name}: nothing drawn for a 20-setting, 8-split store"
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:
        for which, labels in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
            clash = overlapping(boxes(renderer, labels))
            assert not clash, (
                f"{name}: {which} tick labels overlap: {[labels[i].get_text() for i, _ in clash[:3]]}"
            )
    legends = [ax.get_legend() for ax in axes if ax.get_legend()] + list(fig.legends)
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (
                f"{name}: a legend covers the data of an axes"
            )


def test_the_overlap_check_sees_crowded_labels_and_a_legend_on_the_data():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    ax = fig.add_subplot()
    ax.plot(range(12), label="a line")
    ax.set_xticks(range(12), [f"long split name {k}" for k in range(12)])
    ax.legend(loc="center")
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert overlapping(boxes(renderer, ax.get_xticklabels()))
    assert ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_the_registry_has_the_kinds_this_test_was_written_for():
    assert {"bars_accuracy", "accuracy_on_the_line", "accuracy_on_the_curve",
            "seed_spread_accuracy", "bars_worst_group_accuracy", "severity_curves",
            "risk_coverage", "reliability", "reliability_per_setting"} <= set(registered_names())  # fmt: skip


def method_colours(name: str, fig) -> dict[str, set[str]]:
    """method -> the colours it is drawn in, read back from the figure's artists."""
    from matplotlib.colors import to_hex

    out: dict[str, set[str]] = {}
    if name.startswith("bars_"):
        for container in fig.axes[0].containers:
            label = container.get_label()
            if " / " in label:
                method = label.split(" / ")[1].split()[0]
                out.setdefault(method, set()).update(to_hex(p.get_facecolor()) for p in container)
    elif name.startswith("accuracy_on_the"):
        for ax in fig.axes:
            for coll in ax.collections:
                if coll.get_label() in METHODS:
                    colours = {to_hex(c) for c in coll.get_facecolors()}
                    out.setdefault(coll.get_label(), set()).update(colours)
    elif name.startswith("seed_spread_"):  # a point per seed, its row naming the setting
        entries = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        for ax in (a for a in fig.axes if a.get_visible()):
            seeds = next(c for c in ax.collections if c.get_label() == "seeds")
            for (_, row), colour in zip(seeds.get_offsets(), seeds.get_facecolors(), strict=True):
                method = entries[int(round(row))].split(" / ")[1].split()[0]
                out.setdefault(method, set()).add(to_hex(colour))
    elif name.startswith("performance_profile_"):  # a line per setting, labelled method[+tta]
        for ax in (a for a in fig.axes if a.get_visible()):
            for line in ax.get_lines():
                method = line.get_label().split("+")[0]
                if method in METHODS:
                    out.setdefault(method, set()).add(to_hex(line.get_color()))
    elif name == "severity_curves":
        for container in fig.axes[0].containers:  # errorbar: (data line, caps, bars)
            label = container.get_label()
            if " / " in label:
                out.setdefault(label.split(" / ")[1].split()[0], set()).add(
                    to_hex(container.lines[0].get_color())
                )
    return out


def test_a_method_has_one_colour_across_every_plot_of_a_dataset(tmp_path):
    table = store(tmp_path)
    builders = plot_builders(table, aggregate(table), tmp_path, "accuracy")
    seen: dict[str, set[str]] = {}
    kinds = 0
    for name in ("bars_accuracy", "accuracy_on_the_line", "accuracy_on_the_curve",
                 "severity_curves", "bars_worst_group_accuracy", "seed_spread_accuracy"):  # fmt: skip
        colours = method_colours(name, builders[name]())
        assert set(colours) == set(METHODS), (name, colours)
        kinds += 1
        for method, c in colours.items():
            seen.setdefault(method, set()).update(c)
    assert kinds == 6
    profile = method_colours(
        "performance_profile_accuracy", builders["performance_profile_accuracy"]()
    )
    assert profile  # the best settings' lines, in the same palette
    for method, c in profile.items():
        seen.setdefault(method, set()).update(c)
    # without the first method the profile still takes each colour from the dataset's palette
    from harness.report.palette import method_palette
    from harness.report.task_aggregates import performance_profiles

    palette = method_palette(METHODS)
    fewer = table[table["method"] != sorted(METHODS)[0]]
    drawn = method_colours("performance_profile_", performance_profiles(fewer, "accuracy", palette))
    assert drawn and all(c == {palette[m]["color"]} for m, c in drawn.items()), drawn
    # one colour per method everywhere, and no two methods share one
    assert all(len(c) == 1 for c in seen.values()), seen
    assert len({next(iter(c)) for c in seen.values()}) == len(METHODS)


def test_model_names_label_the_points_only_when_few(tmp_path):
    from harness.report.plots import MAX_NAMED, accuracy_on_the_line

    table = store(None)
    few = table[(table["seed"] == 0) & table["method"].isin(["erm", "mixup"])]  # 8 runs
    fig = accuracy_on_the_line(few)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(texts) == sorted(few.drop_duplicates("run_id")["model"])
    assert few["run_id"].nunique() <= MAX_NAMED < table["run_id"].nunique()
    assert not accuracy_on_the_line(table).axes[0].texts


def test_reliability_per_setting_draws_a_panel_per_setting_with_scores(tmp_path):
    from harness.report.reliability import MAX_SETTINGS, reliability_per_setting

    table = store(tmp_path)  # per-example scores for erm's 4 settings only
    fig = reliability_per_setting(tmp_path, table)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    erm = table.loc[table["method"] == "erm", "setting_id"].unique()
    assert len(panels) == len(erm) <= MAX_SETTINGS
    assert all("erm" in ax.get_title() for ax in panels)
