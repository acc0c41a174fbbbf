"""The page's interactive figures (harness/report/interactive.py): one point per run with
its setting and seed in the hover text, severity curves whose error bars are the 95% t
interval over seeds, the dataset's one palette."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness.report.interactive import (
    MAX_LINES,
    accuracy_on_the_line_figure,
    dataset_figures,
    severity_figure,
)
from harness.report.palette import method_palette
from tests.test_plot_layout import METHODS, store


@pytest.fixture(scope="module")
def table():
    return store(None)


def test_accuracy_on_the_line_has_a_point_per_run_and_hover_names_setting_and_seed(table):
    fig = accuracy_on_the_line_figure(table)
    shifted = table[(table["split_role"] == "shift_test") & (table["group_key"] == "")]
    panels = shifted["split"].nunique()
    points = [t for t in fig.data if t.mode == "markers"]
    runs = table["run_id"].nunique()
    assert sum(len(t.x) for t in points) == runs * min(panels, 6)
    palette = method_palette(METHODS)
    for t in points:
        assert t.marker.color == palette[t.name]["color"]
        seeds = table[table["method"] == t.name].drop_duplicates("run_id")["seed"]
        assert all("setting" in h and "seed" in h for h in t.text)
        assert {h.rsplit("seed ", 1)[1] for h in t.text} == {str(s) for s in seeds}
    # the y value of a point is the probit of that run's accuracy on the panel's split
    first = points[0]
    erm = shifted[(shifted["split"] == "grid8") & (shifted["method"] == first.name)]
    assert sorted(first.y) == pytest.approx(
        sorted(stats.norm.ppf(erm["value"].clip(1e-3, 1 - 1e-3))), abs=1e-4
    )


def test_severity_curves_show_the_t_interval_over_seeds(table):
    fig = severity_figure(table)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert 0 < len(lines) <= MAX_LINES
    line = lines[0]
    model, rest = line.name.split(" / ")
    method = rest.split()[0]
    # independently: per run, the mean accuracy over corruptions at severity 3
    rows = table[
        (table["model"] == model)
        & (table["method"] == method)
        & (table["group_key"] == "")
        & (table["metric"] == "accuracy")
        & table["split"].isin(["gaussian_noise-3", "defocus_blur-3"])
    ]
    per_run = rows.groupby("run_id")["value"].mean().to_numpy()
    k = list(line.x).index(3)
    assert line.y[k] == pytest.approx(per_run.mean())
    half = stats.t.ppf(0.975, len(per_run) - 1) * per_run.std(ddof=1) / np.sqrt(len(per_run))
    assert line.error_y.array[k] == pytest.approx(min(half, 1 - per_run.mean()))
    assert line.error_y.arrayminus[k] == pytest.approx(min(half, per_run.mean()))
    seeds = [t for t in fig.data if t.mode == "markers" and t.legendgroup == line.name]
    assert seeds and all("seed" in h for h in seeds[0].text)


def test_nothing_to_draw_gives_no_figure(table):
    assert severity_figure(table[~table["split"].str.contains("-")]) is None
    assert dataset_figures(table.iloc[:0]) == []


def test_the_interval_stays_within_0_and_1():
    import pandas as pd

    rows = [
        {"run_id": f"r{seed}", "setting_id": "s" * 20, "dataset": "toy", "model": "m",
         "method": "erm", "tta": "", "seed": seed, "split": "noise-1", "split_role": "shift_test",
         "scorer": "", "metric": "accuracy", "group_key": "", "group_value": "", "value": v,
         "n": 10, "eval_id": "e"}
        for seed, v in enumerate([0.02, 0.9])
    ]  # fmt: skip
    line = severity_figure(pd.DataFrame(rows)).data[0]
    assert line.y[0] + line.error_y.array[0] == pytest.approx(1.0)
    assert line.y[0] - line.error_y.arrayminus[0] == pytest.approx(0.0)
