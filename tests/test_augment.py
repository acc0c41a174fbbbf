"""Training augmentation (harness/augment.py, conf/augment/): only the training split is
augmented, seeded per (seed, epoch, example) so reruns and loader workers agree bit for bit,
it enters the run key only when not `none`, and benchmarks refuse what changes their label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from harness import augment
from harness import run as run_mod
from harness.data import BenchmarkTransform, array_split
from harness.keys import make_keys, run_payload
from harness.train import GroupedSplit

from .conftest import CONF, TINY, compose_config


def _config(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose_config(overrides), resolve=True)


def _asymmetric_split(n: int = 12):
    """Images whose left and right halves differ, so a flip is visible."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 10, 10, 3), dtype=np.uint8)
    images[:, :, :5] //= 4  # dark left half
    meta = pd.DataFrame({"label": np.arange(n) % 2})
    return array_split("train", "train", images, meta), images


def _transform(name: str, seed: int = 0, **options):
    cfg = {**OmegaConf.to_container(OmegaConf.load(CONF / "augment" / f"{name}.yaml")), **options}
    evaluate = BenchmarkTransform((0.5,) * 3, (0.5,) * 3, (10, 10))
    desc = {"kind": "timm", "input_size": [3, 10, 10], "interpolation": "bilinear"}
    desc.update(mean=[0.5] * 3, std=[0.5] * 3)
    return augment.training_transform(cfg, evaluate, desc, None, seed), evaluate


@pytest.mark.parametrize(
    "name", ["flip_crop", "randaugment", "trivialaugment", "augmix", "domainbed"]
)
def test_every_torchvision_augmentation_is_seeded_per_example_and_keeps_the_shape(name):
    split, images = _asymmetric_split()
    train_tf, evaluate = _transform(name)
    assert isinstance(train_tf, augment.SeededTransform)
    a = torch.stack([train_tf(images[i], i) for i in range(len(images))])
    b = torch.stack([train_tf(images[i], i) for i in reversed(range(len(images)))]).flip(0)
    assert a.shape == (len(images), 3, 10, 10) and a.dtype == torch.float32
    assert torch.equal(a, b)  # a function of (seed, epoch, index), not of the call order
    plain = torch.stack([evaluate(im) for im in images])
    assert not torch.equal(a, plain)  # it does augment
    train_tf.epoch = 1
    assert not torch.equal(a, torch.stack([train_tf(images[i], i) for i in range(len(images))]))


def test_augmentation_leaves_the_global_random_states_as_they_were():
    import random

    split, images = _asymmetric_split()
    train_tf, _ = _transform("randaugment")
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    train_tf(images[0], 0)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_zero_and_two_loader_workers_give_bit_identical_augmented_batches():
    split, _ = _asymmetric_split(16)
    train_tf, _ = _transform("flip_crop", crop="pad")
    train_tf.epoch = 3
    data = GroupedSplit(split, np.zeros(len(split), dtype=np.int64), train_tf)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(
            data, batch_size=4, shuffle=True, num_workers=workers,
            generator=torch.Generator().manual_seed(5),
        )  # fmt: skip
        return [b["x"] for b in loader]

    zero, two = batches(0), batches(2)
    assert len(zero) == 4 and all(torch.equal(a, b) for a, b in zip(zero, two, strict=True))


def test_timm_replaces_the_whole_training_transform():
    split, images = _asymmetric_split()
    train_tf, _ = _transform("timm", options={"hflip": 0.5, "auto_augment": "rand-m9-mstd0.5"})
    x = train_tf(images[0], 0)
    assert x.shape == (3, 10, 10) and torch.equal(x, train_tf(images[0], 0))
    assert augment.effects({"name": "timm", "options": {}}) >= {"crop", "hflip", "colour"}
    assert "hflip" not in augment.effects({"name": "timm", "options": {"hflip": 0}})
    assert augment.effects({"name": "timm", "options": {"no_aug": True}}) == set()
    with pytest.raises(ValueError, match="not options of timm.data.create_transform"):
        augment.validate({"name": "timm", "options": {"flip": 0.5}})


def test_augment_enters_the_key_only_when_not_none(tmp_path):
    def keys(overrides):
        c = _config(overrides)
        return make_keys(run_payload(c, run_mod.build_dataset(c)))

    plain, none = keys([]), keys(["augment=none"])
    assert plain.run_id == none.run_id and "augment" not in plain.payload
    flip = keys(["augment=flip_crop", "augment.crop=null"])
    assert flip.setting_id != plain.setting_id
    assert flip.payload["augment"]["name"] == "flip_crop"
    assert keys(["augment=flip_crop", "augment.crop=pad"]).run_id != flip.run_id
    with pytest.raises(ValueError, match="trainer.epochs=0 trains nothing"):
        run_mod.compose(_config(["augment=flip_crop", "trainer.epochs=0"]))
    with pytest.raises(ValueError, match=r"augment.crop must be one of"):
        run_mod.compose(_config(["augment=flip_crop", "augment.crop=centre"]))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["dataset=coloured_digits", "augment=flip_crop"], "coloured_digits.*hflip: a mirrored"),
        (
            ["dataset=coloured_digits", "augment=domainbed", "augment.flip=false"],
            "colour: the background colour",
        ),
        (["dataset=digits_c", "augment=timm"], "digits_c.*hflip"),
        (
            ["dataset.target=first_step", "augment=flip_crop", "augment.crop=null"],
            "maze.*hflip: the first step",
        ),
        (["augment=flip_crop"], "crop: a crop cuts walls"),
    ],
)
def test_a_refused_augmentation_fails_before_anything_is_written(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", *overrides]))
    assert not any((tmp_path / "runs").glob("*"))


def test_flips_reach_the_method_and_evaluation_is_never_augmented(tmp_path, monkeypatch):
    """A spy on the method's update sees flipped training images; every image the forward
    stage and per-epoch validation see is the evaluation transform's."""
    from methods.erm import ERM

    seen: list[torch.Tensor] = []
    calls = {"augment": 0}
    real_update, real_call = ERM.update, augment.TorchvisionAugment.__call__

    def update(self, batch):
        seen.append(batch["x"].clone())
        return real_update(self, batch)

    def call(self, image):
        calls["augment"] += 1
        return real_call(self, image)

    monkeypatch.setattr(ERM, "update", update)
    monkeypatch.setattr(augment.TorchvisionAugment, "__call__", call)
    over = [*TINY, "eval=minimal", "trainer.max_steps=3", "augment=flip_crop", "augment.crop=null"]
    summary = run_mod.run(compose_config([*over, f"results_dir={tmp_path}"]))
    assert calls["augment"] == 24  # the training examples of 3 steps of 8, nothing else

    c = _config([*over, f"results_dir={tmp_path}"])
    bench = run_mod.build_dataset(c).load(Path(c["cache_dir"])).limited(24)
    evaluate = BenchmarkTransform(bench.mean, bench.std, bench.image_size)
    train = bench.train_split()
    plain = torch.stack([evaluate(train[i][0]) for i in range(len(train))])
    flipped = plain.flip(-1)
    got = torch.cat(seen)
    same = [(plain == x).flatten(1).all(1).any().item() for x in got]
    mirrored = [(flipped == x).flatten(1).all(1).any().item() for x in got]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert any(m and not s for s, m in zip(same, mirrored, strict=True))  # flips happened

    rd = Path(summary["run_dir"])
    info = json.loads((rd / "run_info.json").read_text())
    assert info["augment"] == "flip_crop"
    rows = pd.concat(pd.read_parquet(p) for p in rd.glob("posthoc/*/rows.parquet"))
    assert set(rows["augment"]) == {"flip_crop"}

    # the same config again (a fresh results root): the same augmented batches, bit for bit
    first = list(seen)
    seen.clear()
    run_mod.run(compose_config([*over, f"results_dir={tmp_path / 'again'}"]))
    assert len(seen) == len(first) and all(
        torch.equal(a, b) for a, b in zip(seen, first, strict=True)
    )


def test_leaderboard_tables_show_the_augmentation_only_when_a_setting_has_one():
    from harness.report.aggregate import aggregate, metric_table

    base = {
        "dataset": "d", "eval_id": "e" * 16, "model": "m", "method": "erm", "tta": "",
        "selection_rule": "id_val_accuracy", "split": "id_test", "split_role": "id_test",
        "scorer": "", "metric": "accuracy", "group_key": "", "group_value": "", "run_id": "r",
    }  # fmt: skip
    rows = pd.DataFrame(
        [
            {**base, "setting_id": "a" * 20, "augment": "", "seed": 0, "value": 0.5},
            {**base, "setting_id": "b" * 20, "augment": "flip_crop", "seed": 0, "value": 0.7},
        ]
    )
    table = metric_table(aggregate(rows), "accuracy")
    assert list(table["augment"]) == ["flip_crop", ""]  # best first
    old = metric_table(aggregate(rows.drop(columns="augment").iloc[:1]), "accuracy")
    assert "augment" not in old.columns
