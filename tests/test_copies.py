"""Issue 24, item 2: a copy of a run directory under runs/ whose folder name is not its run_id
(e.g. runs/00-copy-of-<id>, values edited) is never collected, with a warning naming it; the
real run's numbers stay; a vanished run's rows leave on the next incremental rebuild."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

import harness.run as run_mod
from harness.table import collect, collect_cached

from .conftest import TINY, compose_config


@pytest.fixture
def root(tmp_path):
    summary = run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "eval=minimal"]))
    return tmp_path, summary["run_id"]


def test_a_copy_under_another_name_is_skipped_and_named(root):
    results, run_id = root
    original, _ = collect(results)
    copy = results / "runs" / f"00-copy-of-{run_id}"
    shutil.copytree(results / "runs" / run_id, copy)
    for rows_path in copy.glob("posthoc/*/rows.parquet"):  # values edited in the copy
        rows = pd.read_parquet(rows_path)
        rows.assign(value=rows["value"] + 0.5).to_parquet(rows_path)
    with pytest.warns(UserWarning, match=f"00-copy-of-{run_id}.*is not the run_id"):
        table, skipped = collect(results)
    assert any(copy in p.parents or p == copy for p, _ in skipped)
    pd.testing.assert_frame_equal(
        table.sort_values(list(table.columns[:8])).reset_index(drop=True),
        original.sort_values(list(original.columns[:8])).reset_index(drop=True),
    )
    # the copy never enters the incremental cache either: removing it changes nothing, and
    # removing the real run empties the table on the next incremental rebuild
    with pytest.warns(UserWarning):
        first, _, _ = collect_cached(results)
    shutil.rmtree(copy)
    again, _, _ = collect_cached(results)
    assert len(again) == len(first) == len(original)
    shutil.rmtree(results / "runs" / run_id)
    empty, _, _ = collect_cached(results)
    assert empty.empty


def test_a_stage_folder_under_another_eval_id_is_skipped(root):
    results, run_id = root
    stage = next((results / "runs" / run_id / "posthoc").iterdir())
    shutil.copytree(stage, stage.parent / "not-an-eval-id")
    with pytest.warns(UserWarning, match="'not-an-eval-id' is not the eval_id"):
        table, _ = collect(results)
    assert set(table["eval_id"]) == {stage.name}
