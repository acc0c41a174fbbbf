"""The report-section interface (harness/report/sections.py): registration rules, and the
built-in sections that show what write_leaderboard computed (failed runs, comparisons,
model selection) only for the dataset they belong to."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.report.aggregate import aggregate
from harness.report.page import write_page
from harness.report.sections import SECTIONS, Section, register_section, registered_sections
from tests.test_export import table as golden_table


def test_registration_refuses_bad_ids_duplicates_and_empty_sections():
    with pytest.raises(ValueError, match="letters, digits"):
        register_section(Section("bad id", "x", 1, rows=lambda a: a["metric"] == ""))
    with pytest.raises(ValueError, match="registered already"):
        register_section(Section("headline", "x", 1, rows=lambda a: a["metric"] == ""))
    with pytest.raises(ValueError, match="give rows or table"):
        register_section(Section("zz_empty", "x", 1))
    assert "zz_empty" not in SECTIONS


def test_the_built_in_sections_in_page_order():
    ids = [s.id for s in registered_sections()]
    assert ids[0] == "headline" and ids[-1] == "all"
    for kind in ("metrics", "ood", "error_detection", "selective", "calibration", "estimation",
                 "corruptions", "selection", "comparisons", "failed"):  # fmt: skip
        assert kind in ids
    assert all(s.folded for s in registered_sections() if s.id not in ("headline", "plots"))


def test_failed_runs_and_comparisons_of_their_dataset_only(tmp_path):
    agg = aggregate(golden_table())
    failures = pd.DataFrame(
        {
            "run_id": ["a" * 20, "b" * 20], "setting_id": ["s" * 20, "t" * 20],
            "dataset": ["toy", "other"], "model": ["m", "m"], "method": ["erm", "erm"],
            "seed": [0, 1], "reason": ["CUDA out of memory", "elsewhere"], "failed_at": ["", ""],
        }
    )  # fmt: skip
    comparisons = pd.DataFrame(
        {"dataset": ["toy"], "model": ["resnet18"], "method": ["mixup"], "setting_id": ["s_mix"],
         "split": ["id_test"], "difference": [0.02], "verdict": ["better"]}
    )  # fmt: skip
    path = write_page(agg, {}, tmp_path / "index.html", failures=failures, comparisons=comparisons)
    text = path.read_text()
    assert 'id="t_toy_failed-details"' in text and "CUDA out of memory" in text
    assert "elsewhere" not in text  # another dataset's failure
    assert 'id="t_toy_comparisons-details"' in text
    assert 'id="t_toy_selection-details"' not in text  # nothing was selected
    assert 'id="t_toy_estimation-details"' not in text  # no estimator rows: left out
