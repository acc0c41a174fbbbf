"""python -m harness.prepare corruptions: generated corruption sets of any benchmark's split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shiftbench_datasets import corruptions as C
from shiftbench_datasets.cifar import Cifar, write_fixture

from harness.prepare import prepare_corruptions

from .conftest import run_cli


def test_cli_writes_the_c_layout_that_cifar_reads_as_generated(tmp_path):
    written = write_fixture(tmp_path)
    out = tmp_path / "gen"
    args = [
        "corruptions",
        "dataset=cifar10",
        f"data_root={tmp_path}",
        "split=test",
        f"out={out}",
        "corruptions=[fog,gaussian_noise]",
        "severities=[1,3]",
        "dataset.val_size=10",
    ]
    run_cli(args, cwd=tmp_path, module="harness.prepare")
    marker = json.loads((out / "GENERATED.json").read_text())
    assert marker["generator"] == "imagecorruptions-imaug" and marker["severities"] == [1, 3]
    assert marker["source"]["dataset"] == "cifar10" and marker["source"]["split"] == "test"
    fog = np.load(out / "fog.npy")
    test_images, test_labels = written["test"]
    n = len(test_labels)
    assert fog.shape == (2 * n, 32, 32, 3)
    # severity-major, seeded per (corruption, severity): block 2 is severity 3
    assert np.array_equal(fog[n:], C.corrupt_images(test_images, "fog", 3, seed=0))
    cif = Cifar(
        root=str(tmp_path),
        val_size=10,
        corruptions=["fog", "gaussian_noise"],
        severities=[1, 3],
        corruptions_root=str(out),
    )
    assert cif.verify() == []
    bench = cif.load(tmp_path)
    split = bench.splits["gen-fog-3"]  # never named like the released files
    assert "fog-3" not in bench.splits
    assert set(split.meta["corruption_source"]) == {"generated"}
    assert split.info["generator"] == "imagecorruptions-imaug==1.1.5"
    assert split.labels.tolist() == test_labels.tolist()
    all_five = Cifar(root=str(tmp_path), corruptions=["fog"], corruptions_root=str(out))
    assert "holds severities [1, 3], not [2, 4, 5]" in all_five.verify()[0]
    with pytest.raises(ValueError, match="holds severities \\[1, 3\\], not \\[2, 4, 5\\]"):
        all_five.load(tmp_path)
    again = run_cli(args, cwd=tmp_path, module="harness.prepare", check=False)
    assert again.returncode != 0 and "exists and is not empty" in again.stderr


def test_any_benchmark_split_and_clear_errors(tmp_path):
    base = {
        "dataset": {
            "_target_": "shiftbench_datasets.digits_c.DigitsC",
            "name": "digits_c",
            "families": ["noise"],  # few generated splits: the test is about val
            "severities": [1],
            "limit": 4,
        },
        "cache_dir": str(tmp_path / "cache"),
        "corruptions": "noise",
        "severities": [2],
        "seed": 0,
        "limit": 3,
        "generator": "shiftbench_datasets.corruptions",
    }
    out = prepare_corruptions({**base, "split": "val", "out": str(tmp_path / "d")})
    assert sorted(p.name for p in out.glob("*.npy")) == [
        "gaussian_noise.npy",
        "impulse_noise.npy",
        "labels.npy",
        "shot_noise.npy",
    ]
    assert np.load(out / "shot_noise.npy").shape == (3, 32, 32, 3)
    with pytest.raises(ValueError, match="has splits \\["):
        prepare_corruptions({**base, "split": "nope", "out": str(tmp_path / "e")})
    with pytest.raises(ValueError, match="unknown corruptions"):
        prepare_corruptions(
            {**base, "corruptions": ["smog"], "split": "val", "out": str(tmp_path / "f")}
        )
