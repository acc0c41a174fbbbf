"""ImageNet family presets of the folder adapter on tiny fixtures of each released layout, and
evaluation-only runs of a 1000-class test_resnet from a checkpoint the test writes."""

from __future__ import annotations

import json
import pkgutil

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from shiftbench_datasets.folders import timm_synsets
from shiftbench_datasets.imagenet import FIXTURE_CLASSES, write_fixture

from harness import registry
from harness import run as run_mod
from harness.data import BenchmarkTransform
from harness.outputs import Outputs

from .conftest import TINY, compose_config, run_rows


def preset(name, tmp_path, *overrides):
    cfg = compose_config([f"dataset={name}", f"data_root={tmp_path}", *overrides])
    return registry.build("dataset", OmegaConf.to_container(cfg.dataset, resolve=True))


def test_val_and_v2_agree_on_labels_and_v2_is_not_sorted_as_text(tmp_path):
    for which in ("val", "v2", "sketch", "c"):
        write_fixture(tmp_path, which)
    adapter = preset("imagenet", tmp_path)
    assert adapter.verify() == []
    bench = adapter.load(tmp_path)
    synsets = timm_synsets("imagenet")
    assert bench.num_classes == 1000 and bench.classes == synsets
    val, v2 = bench.splits["val"].meta, bench.splits["v2"].meta
    assert sorted(set(val["label"])) == sorted(set(v2["label"])) == list(FIXTURE_CLASSES)
    assert (v2["label"] == v2["class_folder"].astype(int)).all()  # '10' is class 10
    assert (val["label"] == val["class_folder"].map(synsets.index)).all()
    roles = {k: s.role for k, s in bench.splits.items()}
    assert roles == {
        "val": "id_test",
        "v2": "shift_test",
        "sketch": "shift_test",
        "gaussian_noise-1": "shift_test",
        "gaussian_noise-5": "shift_test",
        "fog-3": "shift_test",
    }
    fog = bench.splits["fog-3"].meta
    assert set(fog["severity"]) == {3} and set(fog["corruption_source"]) == {"released"}
    assert bench.splits["val"].load_image(0).mode == "RGB"
    assert bench.head_index is None  # the full ImageNet-1k head


def test_optional_shift_sets_may_be_absent_but_val_may_not(tmp_path):
    write_fixture(tmp_path, "val")
    assert list(preset("imagenet", tmp_path).load(tmp_path).splits) == ["val"]
    problems = preset("imagenet_v2", tmp_path).verify()
    assert (
        len(problems) == 1 and "imagenetv2-matched-frequency-format-val is missing" in problems[0]
    )


def test_imagenet_r_and_a_are_200_classes_masked_onto_the_1000_head(tmp_path):
    for which in ("r", "a"):
        write_fixture(tmp_path, which)
        adapter = preset(f"imagenet_{which}", tmp_path)
        assert adapter.verify() == []  # README.txt beside the class folders is no class
        bench = adapter.load(tmp_path)
        indices = pkgutil.get_data("timm.data", f"_info/imagenet_{which}_indices.txt").split()
        assert bench.num_classes == 200 and bench.head_classes == 1000
        assert bench.head_index == [int(i) for i in indices]
        assert set(bench.splits[which].meta["label"]) == {0, 7, 199}


def test_an_unknown_wordnet_folder_is_refused(tmp_path):
    folder = write_fixture(tmp_path, "r")
    (folder / "n99999999").mkdir()
    (problem,) = preset("imagenet_r", tmp_path).verify()
    assert "['n99999999'] are not in the class map (imagenet_r, 200 classes" in problem


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "test_resnet_1k.pth"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def eval_only(tmp_path, dataset, checkpoint_path):
    tiny = [o for o in TINY if not o.startswith("trainer.")]
    return run_mod.run(
        compose_config(
            [
                *tiny,
                f"dataset={dataset}",
                f"data_root={tmp_path}",
                f"results_dir={tmp_path / 'res'}",
                "dataset.image_size=32",
                "trainer.epochs=0",
                f"model.checkpoint={checkpoint_path}",
                "eval=minimal",
            ]
        )
    )


def test_evaluation_only_run_on_imagenet_r_uses_the_200_logits(tmp_path, checkpoint):
    path, model = checkpoint
    write_fixture(tmp_path, "r")
    summary = eval_only(tmp_path, "imagenet_r", path)
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    bench = json.loads((run_dir / "benchmark.json").read_text())
    cached = Outputs.load(run_dir / "outputs" / f"r-{bench['splits']['r']['forward_key'][:16]}.npz")
    assert cached.logits.shape == (6, 200)
    adapter = preset("imagenet_r", tmp_path, "dataset.image_size=32")
    loaded = adapter.load(tmp_path)
    split = loaded.splits["r"]
    transform = BenchmarkTransform(loaded.mean, loaded.std, loaded.image_size)
    x = torch.stack([transform(split.load_image(i)) for i in range(len(split))])
    with torch.no_grad():
        full = model(x).numpy()
    np.testing.assert_allclose(cached.logits, full[:, loaded.head_index], rtol=1e-4, atol=1e-5)
    rows = run_rows(run_dir)
    accuracy = rows[
        (rows["split"] == "r") & (rows["metric"] == "accuracy") & (rows["scorer"] == "")
    ]
    expected = (full[:, loaded.head_index].argmax(1) == split.labels).mean()
    assert accuracy["value"].item() == pytest.approx(expected)


def test_evaluation_only_run_on_the_imagenet_preset(tmp_path, checkpoint):
    path, _ = checkpoint
    for which in ("val", "v2", "c"):
        write_fixture(tmp_path, which, per_class=1)
    summary = eval_only(tmp_path, "imagenet", path)
    rows = run_rows(tmp_path / "res" / "runs" / summary["run_id"])
    accuracy = rows[(rows["metric"] == "accuracy") & (rows["scorer"] == "")]
    assert set(accuracy["split"]) == {"val", "v2", "gaussian_noise-1", "gaussian_noise-5", "fog-3"}
