"""MetaShift adapter on fixtures written in the released layouts."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from shiftbench_datasets.metashift import (
    MetaShift,
    parse_subset,
    shift_distances,
    spectral_positions,
    subset_graph,
    write_fixture,
)

from harness import run as run_mod

from .conftest import TINY, compose_config, run_rows


def test_subpopulation_layout_groups_and_minority_knob(tmp_path):
    written = write_fixture(tmp_path / "ms", "subpopulation")
    bench = MetaShift(root=str(tmp_path / "ms"), layout="subpopulation").load(tmp_path)
    assert bench.classes == ["cat", "dog"] and bench.group_cols == ["label", "context"]
    roles = {k: s.role for k, s in bench.splits.items()}
    assert roles == {"train": "train", "val": "val", "val_out_of_domain": "shift_test"}
    train_val = [*bench.splits["train"].meta.itertuples(), *bench.splits["val"].meta.itertuples()]
    assert len(train_val) == 16
    for row in train_val:  # context and label agree with the pickled mapping and the folder
        assert written["groups"][row.image_id] == [f"{row.class_name}({row.context})"]
        assert bench.classes[row.label] == row.class_name
    ood = bench.splits["val_out_of_domain"].meta
    assert ood.groupby(["class_name", "context"]).size().tolist() == [2, 2, 2, 2]
    image, label, _ = bench.splits["train"][0]
    assert image.mode == "RGB" and image.size == (8, 8)

    limited = MetaShift(root=str(tmp_path / "ms"), layout="subpopulation", num_minority=1).load(
        tmp_path
    )
    both = pd.concat([limited.splits["train"].meta, limited.splits["val"].meta])
    counts = both.groupby(["class_name", "context"]).size().to_dict()
    assert counts[("cat", "outdoor")] == 1 and counts[("dog", "indoor")] == 1
    assert counts[("cat", "indoor")] == 6 and counts[("dog", "outdoor")] == 6


def test_unknown_image_id_names_the_file(tmp_path):
    write_fixture(tmp_path / "ms", "subpopulation")
    with (tmp_path / "ms" / "imageID_to_group.pkl").open("wb") as f:
        pickle.dump({}, f)
    with pytest.raises(ValueError, match=r"\.jpg: image id '\d+' is not in .*imageID_to_group.pkl"):
        MetaShift(root=str(tmp_path / "ms")).load(tmp_path)


def test_domain_generalization_layout_with_shift_distance(tmp_path):
    write_fixture(tmp_path / "ms", "domain_generalization")
    bench = MetaShift(
        root=str(tmp_path / "ms"),
        layout="domain_generalization",
        min_subset_size=5,
        candidate_subsets=str(tmp_path / "ms" / "full-candidate-subsets.pkl"),
    ).load(tmp_path)
    test = bench.splits["test"].meta
    assert bench.splits["test"].role == "shift_test"
    assert set(test["subset"]) == {"cat(shelf)", "cat(grass)", "dog(shelf)", "dog(bench)"}
    d = bench.info["shift_distance"]
    # the community next to the training ones in the meta-graph is closer than the far one
    assert d["cat(shelf)"] < d["cat(grass)"] and d["dog(shelf)"] < d["dog(bench)"]
    assert (test["shift_distance"] == test["subset"].map(d)).all()
    assert bench.splits["train"].meta["shift_distance"].isna().all()


def test_meta_graph_matches_the_papers_definition():
    sets = {"a(x)": {1, 2, 3, 4}, "a(y)": {3, 4, 5, 6, 7, 8, 9, 10}, "a(z)": {10, 11}}
    g = subset_graph(sets, edge_threshold=0.2)
    assert g["a(x)"]["a(y)"]["weight"] == pytest.approx(2 / 4)  # overlap / smaller set
    assert g["a(y)"]["a(z)"]["weight"] == pytest.approx(1 / 2)
    assert not g.has_edge("a(x)", "a(z)")
    weak = subset_graph({"a(x)": set(range(10)), "a(y)": {9, 10, 11, 12, 13, 14, 15, 16, 17, 18}})
    assert not weak.has_edge("a(x)", "a(y)")  # 1/10 < 0.2: dropped
    with pytest.raises(ValueError, match="needs at least 6"):
        spectral_positions(g)
    chain = {f"a({k})": set(range(3 * k, 3 * k + 8)) for k in range(10)}
    d = shift_distances(chain, ["a(0)", "a(1)"], ["a(2)", "a(8)"])
    assert d["a(2)"] < d["a(8)"] and np.isfinite(list(d.values())).all()
    with pytest.raises(ValueError, match="class\\(context\\)"):
        parse_subset("cat-indoor")


def test_a_run_on_metashift_reports_context_groups(tmp_path):
    write_fixture(tmp_path / "metashift", "subpopulation")  # where data_root points
    tiny = [o for o in TINY if not o.startswith("dataset.limit")]
    summary = run_mod.run(
        compose_config(
            [
                *tiny,
                "dataset=metashift",
                f"data_root={tmp_path}",
                f"results_dir={tmp_path / 'res'}",
                "eval=minimal",
                "dataset.image_size=16",
            ]
        )
    )
    rows = run_rows(tmp_path / "res" / "runs" / summary["run_id"])
    groups = rows[(rows["split"] == "val_out_of_domain") & (rows["group_key"] == "label|context")]
    per_group = groups[groups["metric"] == "accuracy"]
    assert set(per_group["group_value"]) == {"0|indoor", "0|outdoor", "1|indoor", "1|outdoor"}
    worst = groups[groups["metric"] == "worst_group_accuracy"]["value"].item()
    assert worst == per_group["value"].min()
    # no id_test split: OOD metrics take the ID validation split as the reference
    assert "auroc_vs_val" in set(rows.loc[rows["split"] == "val_out_of_domain", "metric"])


def test_verify_names_what_is_missing_and_passes_on_the_fixture(tmp_path):
    from tests.conftest import run_cli

    args = ["dataset=metashift", f"data_root={tmp_path}"]
    missing = run_cli(args, cwd=tmp_path, module="harness.verify", check=False)
    assert missing.returncode == 1
    assert f"dataset.root={tmp_path}/metashift does not exist" in missing.stdout
    (tmp_path / "metashift").mkdir()
    incomplete = run_cli(args, cwd=tmp_path, module="harness.verify", check=False)
    assert incomplete.returncode == 1
    assert "imageID_to_group.pkl is missing" in incomplete.stdout
    assert "train is missing" in incomplete.stdout
    write_fixture(tmp_path / "metashift", "subpopulation")
    ok = run_cli(args, cwd=tmp_path, module="harness.verify")
    assert "OK" in ok.stdout
