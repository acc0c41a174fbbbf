"""TTA on a split whose size leaves a final batch of one example (len % tta.batch_size == 1):
the example joins the previous batch only where the plugin would otherwise fail (batch norm
computing statistics over one value per channel); everywhere else the batches, and so the
numbers, are what they were. A one-example split that would fail is refused before any
split is adapted."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from torch import nn

from harness import run as run_mod
from harness.data import Split, array_split
from harness.tta import Predictor, adapt_split, batch_indices, fold_last_batch
from methods.tta.bn_adapt import BNAdapt
from methods.tta.lame import LAME
from methods.tta.tent import Tent

from .conftest import TINY, compose_config

CPU = torch.device("cpu")
PLUGINS = {
    "bn_adapt": lambda bs: BNAdapt(batch_size=bs),
    "tent": lambda bs: Tent(batch_size=bs, lr=0.01),
    "lame": lambda bs: LAME(batch_size=bs),
}
ONE_VALUE = "Expected more than 1 value per channel when training"


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(image, dtype=torch.float32)[None]


def images_split(n: int, size: int = 8) -> Split:
    images = np.random.default_rng(0).random((n, size, size), dtype=np.float32)
    return array_split("s", "shift_test", images, pd.DataFrame({"label": np.zeros(n, int)}))


def pooled_net() -> nn.Module:
    """test_resnet on 8×8 inputs: its last batch norms see 1×1 maps, so one example is one
    value per channel."""
    torch.manual_seed(0)
    return Predictor(timm.create_model("test_resnet", num_classes=3, in_chans=1).eval())


class SpatialBN(nn.Module):
    """Batch norm only before pooling, on 8×8 maps: a batch of one is 64 values per channel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.head = (
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.Linear(4, 3),
        )

    def predict(self, x):
        features = self.bn(self.conv(x)).relu().mean((2, 3))
        return self.head(features), features


def by_hand(plugin, net: nn.Module, split: Split, chunks: list[int]) -> np.ndarray:
    """The plugin called directly on batches of the given sizes, cut by torch.split."""
    x = torch.stack([to_tensor(split.load_image(i)) for i in range(len(split))])
    parts = x.split(chunks)
    return plugin.adapt(copy.deepcopy(net).eval(), lambda: iter(parts))[0].detach().numpy()


@pytest.mark.parametrize("n, bs", [(1, 4), (5, 4), (9, 4), (8, 4), (7, 4), (24, 23), (24, 5)])
def test_batch_indices_cover_the_split_in_order_and_fold_only_a_final_one(n, bs):
    plain = [bs] * (n // bs) + ([n % bs] if n % bs else [])  # sizes by formula
    folded = plain[:-2] + [plain[-2] + 1] if n % bs == 1 and n > bs else plain
    for fold, sizes in ((False, plain), (True, folded)):
        batches = batch_indices(n, bs, fold)
        assert [len(b) for b in batches] == sizes
        assert np.concatenate(batches).tolist() == list(range(n))


@pytest.mark.parametrize("name", ["bn_adapt", "tent"])
def test_a_final_batch_of_one_that_batch_norm_refuses_joins_the_previous_batch(name):
    net, split, bs = pooled_net(), images_split(9), 4  # batches 4, 4, 1
    with pytest.raises(ValueError, match=ONE_VALUE):  # what the run did before: fail
        by_hand(PLUGINS[name](bs), net, split, [4, 4, 1])
    assert fold_last_batch(PLUGINS[name](bs), net, split, to_tensor, CPU)
    logits = adapt_split(PLUGINS[name](bs), net, split, to_tensor, CPU)[0]
    assert logits.shape == (9, 3)
    np.testing.assert_array_equal(logits, by_hand(PLUGINS[name](bs), net, split, [4, 5]))


@pytest.mark.parametrize(
    "name, net",
    [("lame", pooled_net), ("tent", SpatialBN), ("bn_adapt", SpatialBN)],
)
def test_a_final_batch_of_one_that_works_is_left_alone(name, net):
    net, split, bs = net(), images_split(9), 4
    assert not fold_last_batch(PLUGINS[name](bs), net, split, to_tensor, CPU)
    logits = adapt_split(PLUGINS[name](bs), net, split, to_tensor, CPU)[0]
    np.testing.assert_array_equal(logits, by_hand(PLUGINS[name](bs), net, split, [4, 4, 1]))


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_the_usual_batches_are_unchanged(name):
    net, split, bs = pooled_net(), images_split(10), 4  # batches 4, 4, 2
    assert not fold_last_batch(PLUGINS[name](bs), net, split, to_tensor, CPU)
    logits = adapt_split(PLUGINS[name](bs), net, split, to_tensor, CPU)[0]
    np.testing.assert_array_equal(logits, by_hand(PLUGINS[name](bs), net, split, [4, 4, 2]))


def test_a_one_example_split_batch_norm_refuses_is_refused():
    with pytest.raises(ValueError, match="split 's' has a single example"):
        fold_last_batch(Tent(batch_size=4), pooled_net(), images_split(1), to_tensor, CPU)
    assert not fold_last_batch(LAME(batch_size=4), pooled_net(), images_split(1), to_tensor, CPU)


DIGITS = ["dataset=digits_c", "dataset.families=[noise]", "dataset.severities=[1]"]


def test_a_digits_c_tta_run_with_a_final_batch_of_one_finishes(tmp_path):
    # digits_c's splits hold 24 images here; batches of 23 leave one in every split
    base = [*TINY, *DIGITS, f"results_dir={tmp_path}", "eval=minimal"]
    summary = run_mod.run(compose_config([*base, "tta=tent", "tta.batch_size=23"]))
    assert summary["status"] == "finished"
    run_dir = tmp_path / "runs" / summary["run_id"]
    bench = json.loads((run_dir / "benchmark.json").read_text())
    assert all(s["n"] % 23 == 1 for s in bench["splits"].values())
    assert "final example joins the previous batch" in (run_dir / "run.log").read_text()
    # and tta.json records it per split
    folded = json.loads((run_dir / "tta.json").read_text())["folded_final_batch"]
    assert folded == sorted(bench["splits"]) and folded


def test_a_one_example_split_is_refused_before_any_split_is_adapted(tmp_path):
    from shiftbench_datasets.folders import write_flat_folder

    write_flat_folder(tmp_path / "ood", n=1)
    base = [*TINY, *DIGITS, f"results_dir={tmp_path}", "eval=minimal"]
    base.append(f"ood_sets=[{{name: one, root: {tmp_path / 'ood'}}}]")
    trained = run_mod.run(compose_config(base))
    with pytest.raises(ValueError, match="split 'ood_one' has a single example"):
        run_mod.run(compose_config([*base, "tta=tent"]))
    tta_runs = [p for p in (tmp_path / "runs").iterdir() if p.name != trained["run_id"]]
    assert len(tta_runs) == 1 and not (tta_runs[0] / "outputs").exists()
