"""Paper tables: golden outputs from a small stored tidy table, and the refusals."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pytest

from harness.report.export import export
from tests.conftest import run_cli

GOLDEN = Path(__file__).parent / "golden"
# (file, rows, columns, metric, format, model_selection)
CASES = [
    ("accuracy_by_split.tex", ["method"], "split", "accuracy", "latex", None),
    ("accuracy_by_split.md", ["method"], "split", "accuracy", "markdown", None),
    ("metrics_id_test.tex", ["model", "method"], "metric", ["accuracy", "ece"], "latex", None),
    ("accuracy_by_split.csv", ["method"], "split", "accuracy", "csv", None),
]


def table() -> pd.DataFrame:
    return pd.read_csv(GOLDEN / "tidy_small.csv", keep_default_na=False, na_values=[""]).assign(
        scorer=lambda t: t["scorer"].fillna(""),
        group_key=lambda t: t["group_key"].fillna(""),
        group_value=lambda t: t["group_value"].fillna("").astype(str),
        tta="",
    )


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_golden_tables(case):
    name, rows, columns, metric, fmt, selection = case
    splits = ["id_test"] if columns == "metric" else None
    text = export(table(), rows, columns, metric, fmt, 3, splits=splits, model_selection=selection)
    path = GOLDEN / name
    if os.environ.get("SHIFTBENCH_REGENERATE_GOLDEN"):  # after checking the new output by eye
        path.write_text(text)
    if fmt == "csv":  # full-precision numbers: equal up to float rounding, not digit for digit
        got, expected = (pd.read_csv(io.StringIO(x)) for x in (text, path.read_text()))
        pd.testing.assert_frame_equal(got, expected, rtol=1e-12)
    else:
        assert text == path.read_text()


def test_bold_marks_the_best_of_each_column_lowest_for_lower_is_better_metrics():
    md = export(table(), ["method"], "metric", ["accuracy", "ece"], "markdown", splits=["id_test"])
    agg = table().query("split == 'id_test'").groupby(["method", "metric"])["value"].mean()
    best_acc = agg.xs("accuracy", level="metric").idxmax()
    best_ece = agg.xs("ece", level="metric").idxmin()
    lines = {line.split("|")[1].strip(): line for line in md.splitlines()[2:]}
    assert lines[best_acc].split("|")[2].strip().startswith("**")
    assert lines[best_ece].split("|")[3].strip().startswith("**")
    assert sum(line.count("**") for line in lines.values()) == 4  # one bold cell per column


def test_single_seed_cells_show_the_value_alone_and_mean_std_otherwise():
    md = export(table(), ["method"], "split", "accuracy", "markdown")
    mixup = next(line for line in md.splitlines() if "| mixup" in line)
    erm = next(line for line in md.splitlines() if "| erm" in line)
    assert "±" not in mixup and "±" in erm
    values = table().query("method == 'erm' and split == 'shifted' and metric == 'accuracy'")
    assert f"{values['value'].mean():.3f} ± {values['value'].std(ddof=1):.3f}" in erm


def test_two_settings_in_one_cell_are_refused_and_model_selection_resolves_them():
    t = table()
    other = t[t["method"] == "erm"].assign(
        setting_id="s_erm2", run_id=lambda d: d["run_id"] + "b", value=lambda d: d["value"] - 0.1
    )
    both = pd.concat([t, other])
    with pytest.raises(ValueError, match="several settings share a cell"):
        export(both, ["method"], "split", "accuracy", "markdown")
    md = export(both, ["method"], "split", "accuracy", "latex", model_selection="id_val")
    assert "model selection: ID validation accuracy" in md
    erm_shift = t.query("method == 'erm' and split == 'shifted' and metric == 'accuracy'")
    assert f"{erm_shift['value'].mean():.3f}" in md  # the better setting, not s_erm2
    oracle = export(both, ["method"], "split", "accuracy", "latex", model_selection="oracle")
    assert "oracle" in oracle


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rows": ["colour"]}, "not a table axis"),
        ({"metric": "f1"}, "no rows with metric"),
        ({"fmt": "html"}, "format must be one of"),
        ({"splits": ["nowhere"]}, r"no \['accuracy'\] rows for split"),
        ({"dataset": "imagenet"}, "no rows for dataset"),
    ],
)
def test_bad_options_name_the_problem(kwargs, message):
    args = {"rows": ["method"], "fmt": "markdown", **kwargs}
    with pytest.raises(ValueError, match=message):
        export(table(), **args)


def test_cli_reads_the_results_root_and_writes_the_file(tmp_path):
    table().to_parquet(tmp_path / "table.parquet")
    out = tmp_path / "paper" / "acc.tex"
    run_cli(
        [f"results_dir={tmp_path}", "format=latex", f"output={out}"],
        cwd=tmp_path,
        module="harness.export",
    )
    assert out.read_text() == (GOLDEN / "accuracy_by_split.tex").read_text()
