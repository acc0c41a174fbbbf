"""Test-time adaptation: labels never reach a plugin, nothing leaks between splits, LAME
changes no weight, BN adaptation undoes an input-statistics shift, and a TTA run reuses the
trained run it adapts."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from sklearn.datasets import load_digits
from torch import nn

from harness import run as run_mod
from harness.data import Split, array_split
from harness.tta import Predictor, adapt_split, predict_all
from methods.tta.bn_adapt import BNAdapt
from methods.tta.lame import LAME
from methods.tta.tent import Tent

from .conftest import TINY, compose_config, run_rows

PLUGINS = {
    "bn_adapt": lambda: BNAdapt(batch_size=64),
    "tent": lambda: Tent(batch_size=64, lr=0.01),
    "lame": lambda: LAME(batch_size=64),
}
CPU = torch.device("cpu")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(image, dtype=torch.float32)[None]


@pytest.fixture(scope="module")
def digits_model():
    """test_resnet (batch norm) trained briefly on 8×8 digits; pixels in [0, 1], normalised
    as (p - 0.3) / 0.4 inside the transform. Returns (net, images, labels) of held-out digits."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(images))
    train, test = perm[:1200], perm[1200:]
    x = (torch.as_tensor(images[train])[:, None] - 0.3) / 0.4
    y = torch.as_tensor(digits.target[train])
    model = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(150):
        idx = torch.randint(len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return Predictor(model), images[test], digits.target[test]


def normalise(image: np.ndarray) -> torch.Tensor:
    return (to_tensor(image) - 0.3) / 0.4


def digit_split(name: str, images: np.ndarray, labels: np.ndarray) -> Split:
    return array_split(name, "shift_test", images, pd.DataFrame({"label": labels}))


class LabelsForbidden(Split):
    """A split whose labels (and labelled items) raise when read."""

    @property
    def labels(self):
        raise AssertionError("labels were read during adaptation")

    def __getitem__(self, i):
        raise AssertionError("(image, label, index) items were read during adaptation")


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_adaptation_never_reads_labels(name, digits_model):
    net, images, labels = digits_model
    plain = digit_split("shifted", images[:100], labels[:100])
    forbidden = LabelsForbidden("shifted", "shift_test", plain.meta, plain.load_image)
    with pytest.raises(AssertionError, match="labels were read"):
        forbidden.labels  # noqa: B018  (the guard itself works)
    logits, features = adapt_split(PLUGINS[name](), net, forbidden, normalise, CPU)
    assert logits.shape == (100, 10) and len(features) == 100


def stacked(split: Split):
    """A batches() callable over a split's normalised inputs, for calling a plugin directly."""
    x = torch.stack([normalise(split.load_image(i)) for i in range(len(split))])
    return lambda: iter(x.split(64))


# prior > 0 makes BN adaptation depend on the statistics it starts from
LEAK_PLUGINS = {"bn_adapt": lambda: BNAdapt(batch_size=64, prior=0.5), "tent": PLUGINS["tent"]}


@pytest.mark.parametrize("name", sorted(LEAK_PLUGINS))
def test_adaptation_state_does_not_leak_between_splits(name, digits_model):
    net, images, labels = digits_model
    before = copy.deepcopy(net.state_dict())
    first = digit_split("first", 0.4 * images[:200] + 0.5, labels[:200])  # shifted inputs
    second = digit_split("second", images[200:400], labels[200:400])  # clean inputs
    plugin = LEAK_PLUGINS[name]()
    adapt_split(plugin, net, first, normalise, CPU)
    after_first = adapt_split(plugin, net, second, normalise, CPU)[0]
    alone = adapt_split(LEAK_PLUGINS[name](), copy.deepcopy(net), second, normalise, CPU)[0]
    np.testing.assert_array_equal(after_first, alone)  # the first split left no trace
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} of the trained network changed"
    # the check can fail: one copy adapted on both splits in turn does carry the first over
    leaky = copy.deepcopy(net)
    LEAK_PLUGINS[name]().adapt(leaky, stacked(first))
    leaked = LEAK_PLUGINS[name]().adapt(leaky, stacked(second))[0].detach().numpy()
    assert np.abs(leaked - alone).max() > 1e-3


def test_lame_changes_no_weight_and_smooths_predictions_over_neighbours(digits_model):
    net, images, labels = digits_model
    before = copy.deepcopy(net.state_dict())
    split = digit_split("clean", images[:256], labels[:256])
    plain = predict_all(net, stacked(split))[0].numpy()
    adapted_copy = copy.deepcopy(net)
    lame_logits = LAME(batch_size=64).adapt(adapted_copy, stacked(split))[0].numpy()
    for k, v in adapted_copy.state_dict().items():
        assert torch.equal(v, before[k]), f"LAME changed {k}"
    assert not np.allclose(
        torch.softmax(torch.as_tensor(lame_logits), 1),
        torch.softmax(torch.as_tensor(plain), 1),
        atol=1e-3,
    )


class Clusters(nn.Module):
    """A 'network' whose features are its inputs and whose class scores are noisy."""

    def __init__(self, noisy_logits: torch.Tensor) -> None:
        super().__init__()
        self.noisy_logits = noisy_logits

    def predict(self, x):
        return self.noisy_logits[x[:, -1].long()], x[:, :-1]


def test_lame_corrects_predictions_that_disagree_with_their_neighbours():
    rng = np.random.default_rng(0)
    n = 120
    labels = np.repeat([0, 1, 2], n // 3)
    centres = rng.normal(size=(3, 16)) * 5
    features = centres[labels] + rng.normal(size=(n, 16))
    # a classifier right on 60% of examples, mildly confident either way
    predicted = np.where(rng.random(n) < 0.6, labels, (labels + rng.integers(1, 3, n)) % 3)
    noisy = torch.full((n, 3), 0.0)
    noisy[torch.arange(n), torch.as_tensor(predicted)] = 1.0
    x = torch.as_tensor(np.c_[features, np.arange(n)], dtype=torch.float32)
    order = torch.as_tensor(rng.permutation(n))
    logits = LAME(batch_size=n, knn=5).adapt(Clusters(noisy), lambda: iter([x[order]]))[0]
    before = float((predicted[order.numpy()] == labels[order.numpy()]).mean())
    after = accuracy(logits.numpy(), labels[order.numpy()])
    assert before == pytest.approx(0.6, abs=0.1) and after >= 0.95


def test_bn_adaptation_recovers_accuracy_lost_to_a_brightness_contrast_shift(digits_model):
    net, images, labels = digits_model
    clean = digit_split("clean", images, labels)
    shifted = digit_split("shifted", 0.4 * images + 0.5, labels)  # lower contrast, brighter
    plain = {
        s.name: accuracy(predict_all(net, stacked(s))[0].numpy(), labels) for s in (clean, shifted)
    }
    adapted = accuracy(
        adapt_split(BNAdapt(batch_size=128), net, shifted, normalise, CPU)[0], labels
    )
    # measured: clean 0.97, shifted 0.38, adapted 0.94
    assert plain["clean"] >= 0.9
    assert plain["shifted"] <= plain["clean"] - 0.4  # the shift costs accuracy
    assert adapted >= plain["shifted"] + 0.4  # BN adaptation wins most of it back
    assert adapted >= plain["clean"] - 0.08


def test_a_tta_run_starts_from_the_trained_run_found_by_its_key(tmp_path):
    base = [*TINY, f"results_dir={tmp_path}", "eval=minimal"]
    trained = run_mod.run(compose_config(base))
    done = tmp_path / "runs" / trained["run_id"] / "DONE"
    stamp = done.stat().st_mtime_ns
    runs = {name: run_mod.run(compose_config([*base, f"tta={name}"])) for name in ("tent", "lame")}
    assert done.stat().st_mtime_ns == stamp  # not retrained, not rewritten
    all_runs = {p.name for p in (tmp_path / "runs").iterdir()}
    assert all_runs == {trained["run_id"], runs["tent"]["run_id"], runs["lame"]["run_id"]}
    train_rows = run_rows(tmp_path / "runs" / trained["run_id"])
    for name, summary in runs.items():
        run_dir = tmp_path / "runs" / summary["run_id"]
        record = json.loads((run_dir / "tta.json").read_text())
        assert record["train_run_id"] == trained["run_id"]
        assert record["folded_final_batch"] == []  # no split leaves a final batch of one here
        rows = run_rows(run_dir)
        assert set(rows["tta"]) == {name} and set(rows["method"]) == {"erm"}
        assert set(rows["split"]) == set(train_rows["split"])
        assert set(rows["metric"]) >= {"accuracy", "nll", "ece"}
        assert not (set(rows["forward_key"]) & set(train_rows["forward_key"])) - {""}
        assert rows["setting_id"].iloc[0] != train_rows["setting_id"].iloc[0]
    assert set(train_rows["tta"]) == {""}
    again = run_mod.run(compose_config([*base, "tta=tent"]))
    assert again["skipped"] and again["run_id"] == runs["tent"]["run_id"]


def test_bad_tta_settings_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="tta=tent: tta.lr must be > 0"):
        run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "tta=tent", "tta.lr=-1"]))
    assert not any((tmp_path / "runs").glob("*"))


def test_an_unknown_tta_name_lists_the_available_ones():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as info:
        compose_config([*TINY, "tta=nope"])
    assert "Could not find 'tta/nope'" in str(info.value)
    assert all(name in str(info.value) for name in ("bn_adapt", "lame", "none", "tent"))


def test_harness_run_still_pickles_by_value_for_the_joblib_launcher():
    """joblib's launcher pickles `python -m harness.run`'s functions by value (cloudpickle);
    a function naming both `torch` and `.classes` drags torch.classes along and fails."""
    import runpy

    import cloudpickle

    module = runpy.run_module("harness.run", run_name="__not_importable__")
    assert cloudpickle.dumps(module["main"])
