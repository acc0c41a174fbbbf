"""Image folders: explicit class maps (never a text sort), OOD folders attached to any benchmark."""

from __future__ import annotations

import json

import pytest
from shiftbench_datasets.folders import (
    ClassMap,
    ImageFolders,
    write_class_folders,
    write_flat_folder,
)
from shiftbench_datasets.imagenet import write_ood_fixture

from harness import run as run_mod
from harness.data import DataError

from .conftest import TINY, compose_config, run_rows


def folders(tmp_path, class_map, **kw):
    splits = kw.pop("splits", {"test": {"path": "test", "role": "id_test"}})
    return ImageFolders(root=str(tmp_path), splits=splits, class_map=class_map, **kw)


def test_integer_folders_are_numbers_not_text(tmp_path):
    write_class_folders(tmp_path / "test", ["0", "1", "2", "10"], per_class=1)
    bench = folders(tmp_path, "integer", num_classes=11).load(tmp_path)
    meta = bench.splits["test"].meta
    assert dict(zip(meta["class_folder"], meta["label"], strict=True)) == {
        "0": 0,
        "1": 1,
        "2": 2,
        "10": 10,
    }
    assert bench.num_classes == 11
    with pytest.raises(ValueError, match="needs dataset.num_classes"):
        folders(tmp_path, "integer")


def test_mapping_files_and_lists(tmp_path):
    write_class_folders(tmp_path / "test", ["zebra", "ant", "mole"], per_class=1)
    (tmp_path / "map.txt").write_text("zebra 1\nant 2\nmole 0\n")
    (tmp_path / "map.json").write_text(json.dumps({"zebra": 1, "ant": 2, "mole": 0}))
    (tmp_path / "order.txt").write_text("mole\nzebra\nant\n")
    for spec in (
        str(tmp_path / "map.txt"),
        str(tmp_path / "map.json"),
        str(tmp_path / "order.txt"),
        ["mole", "zebra", "ant"],
    ):
        bench = folders(tmp_path, spec).load(tmp_path)
        assert bench.classes == ["mole", "zebra", "ant"]
        meta = bench.splits["test"].meta
        assert dict(zip(meta["class_folder"], meta["label"], strict=True)) == {
            "mole": 0,
            "zebra": 1,
            "ant": 2,
        }
    (tmp_path / "bad.txt").write_text("zebra 1\nant 1\n")
    with pytest.raises(ValueError, match="labels must be 0..1, each once"):
        ClassMap(str(tmp_path / "bad.txt"))
    with pytest.raises(ValueError, match="class_map is required"):
        folders(tmp_path, None)


def test_unknown_class_folder_missing_and_empty_splits_are_named(tmp_path):
    write_class_folders(tmp_path / "test", ["cat", "dog", "newt"], per_class=1)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    adapter = folders(
        tmp_path,
        ["cat", "dog"],
        splits={
            "test": {"path": "test", "role": "id_test"},
            "shifted": {"path": "empty", "role": "shift_test"},
            "gone": {"path": "nowhere", "role": "shift_test"},
        },
    )
    problems = adapter.verify()
    assert any("class folders ['newt'] are not in the class map" in p for p in problems)
    assert any("empty has no images in class folders (split 'shifted'" in p for p in problems)
    assert any("nowhere is missing (split 'gone'" in p for p in problems)
    with pytest.raises(DataError, match="newt"):
        adapter.check()
    with pytest.raises(ValueError, match="class folders \\['newt'\\] are not in the class map"):
        folders(tmp_path, ["cat", "dog"]).load(tmp_path)


def test_a_tiny_training_run_on_folders(tmp_path):
    for k, split in enumerate(("train", "val", "test")):
        write_class_folders(tmp_path / "folders" / split, ["b", "a"], per_class=3, seed=k)
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=folders",
                "dataset.class_map=[b,a]",
                "dataset.image_size=16",
                f"data_root={tmp_path}",
                f"results_dir={tmp_path / 'res'}",
                "eval=minimal",
            ]
        )
    )
    rows = run_rows(tmp_path / "res" / "runs" / summary["run_id"])
    assert set(rows.loc[rows["metric"] == "accuracy", "split"]) >= {"train", "val", "test"}


def test_ood_folders_attach_to_any_benchmark(tmp_path):
    write_ood_fixture(tmp_path / "textures", n=4)
    write_flat_folder(tmp_path / "svhn", n=3)
    base = [
        *TINY,
        "dataset=digits_c",
        "dataset.families=[noise]",
        "dataset.severities=[1]",
        f"results_dir={tmp_path / 'res'}",
        f"cache_dir={tmp_path / 'cache'}",
        "eval=minimal",
    ]
    summary = run_mod.run(
        compose_config(
            [
                *base,
                f"ood_sets=[{tmp_path / 'textures'},{{name: digits_svhn, root: {tmp_path / 'svhn'}}}]",
            ]
        )
    )
    rows = run_rows(tmp_path / "res" / "runs" / summary["run_id"])
    for split, n in (("ood_textures", 4), ("ood_digits_svhn", 3)):
        auroc = rows[(rows["split"] == split) & (rows["metric"] == "auroc_vs_id_test")]
        assert auroc["split_role"].item() == "ood" and auroc["n"].item() == 24 + n
    plain = run_mod.run(compose_config(base))
    assert plain["run_id"] != summary["run_id"]  # the OOD sets are part of the key
    with pytest.raises(DataError, match="nowhere does not exist"):
        run_mod.run(compose_config([*base, f"ood_sets=[{tmp_path / 'nowhere'}]"]))
    with pytest.raises(ValueError, match="clashes with a split"):
        run_mod.run(
            compose_config([*base, f"ood_sets=[{{name: photos, root: {tmp_path / 'svhn'}}}]"])
        )
