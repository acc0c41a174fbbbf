"""dataset=rotated_digits: DomainBed's RotatedMNIST form on scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage
from sklearn.datasets import load_digits

from harness import registry

from .conftest import compose_config

ANGLES = [0, 15, 30, 45, 60, 75]


def adapter(*overrides: str):
    c = OmegaConf.to_container(compose_config(["dataset=rotated_digits", *overrides]), resolve=True)
    return registry.build("dataset", c["dataset"])


@pytest.fixture(scope="module")
def bench():
    return adapter().load("/nonexistent")


def test_splits_roles_and_domains(bench):
    assert {n: s.role for n, s in bench.splits.items()} == {
        "train": "train",
        "val": "val",
        "test": "shift_test",
    }
    assert bench.domain_col == "domain" and bench.group_cols == ["domain"]
    n = len(load_digits().target)
    per_domain = {d: len(range(i, n, 6)) for i, d in enumerate(ANGLES)}  # images[i::6]
    test = bench.splits["test"].meta
    assert set(test.domain) == {75} and len(test) == per_domain[75]
    train, val = bench.splits["train"].meta, bench.splits["val"].meta
    for d in ANGLES[:-1]:
        n_val = int(per_domain[d] * 0.2)  # DomainBed's holdout: int(len(env) * fraction)
        assert (val.domain == d).sum() == n_val
        assert (train.domain == d).sum() == per_domain[d] - n_val
    # every digit exactly once over the three splits: domains and holdouts are disjoint
    rows = np.concatenate([train.source_index, val.source_index, test.source_index])
    assert np.array_equal(np.sort(rows), np.arange(n))
    assert np.array_equal(train.label, load_digits().target[train.source_index])


def test_each_domain_is_its_rotation_of_the_upright_digit(bench):
    """Compared with scipy's rotation of the domain-0 rendering of the same digit: the
    matching angle agrees far better than the neighbouring ones."""
    from shiftbench_datasets.rotated_digits import rotated_digits

    frame = 28  # the preset's image_size

    train = bench.splits["train"]
    for d in (15, 45, 60):
        i = int(np.flatnonzero(train.meta.domain == d)[0])
        ours = train.load_image(i)[:, :, 0].astype(float)
        digit = load_digits().images[train.meta.source_index[i]][None]
        upright = rotated_digits(digit, 0, frame)[0, :, :, 0].astype(float)

        corr = {
            a: np.corrcoef(
                ours.ravel(), ndimage.rotate(upright, a, reshape=False, order=1).ravel()
            )[0, 1]
            for a in (d - 15, d, d + 15)
        }
        assert corr[d] > 0.97
        assert corr[d] > max(corr[d - 15], corr[d + 15]) + 0.05
    assert Image.fromarray(train.load_image(0)).size == (28, 28)


def test_a_domain_keeps_its_digits_and_holdout_whatever_is_held_out(bench):
    other = adapter("dataset.test_domains=[0]").load("/nonexistent")
    for name in ("train", "val"):
        a, b = bench.splits[name].meta, other.splits[name].meta
        for d in (15, 30, 45, 60):
            assert np.array_equal(a.source_index[a.domain == d], b.source_index[b.domain == d])
    assert set(other.splits["test"].meta.domain) == {0}
    assert set(other.splits["train"].meta.domain) == {15, 30, 45, 60, 75}


def test_deterministic_and_keyed():
    a, b = adapter().load("/x"), adapter().load("/y")
    for name in a.splits:
        assert a.splits[name].meta.equals(b.splits[name].meta)
        assert np.array_equal(a.splits[name].load_image(3), b.splits[name].load_image(3))
    base = adapter()
    assert base.key_config()["test_domains"] == [75]
    # the held-out set, not its spelling
    assert (
        adapter("dataset.test_domains=[75,0]").key_config()
        == adapter("dataset.test_domains=[0,75]").key_config()
    )
    for override in ("dataset.test_domains=[0]", "dataset.seed=1", "dataset.holdout_fraction=0.1"):
        assert adapter(override).fingerprint() != base.fingerprint()
    shifted = adapter("dataset.seed=1").load("/x").splits["test"].meta.source_index
    assert not np.array_equal(shifted, a.splits["test"].meta.source_index)


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.test_domains=[90]", "dataset.test_domains: [90] not among"),
        ("dataset.test_domains=[]", "dataset.test_domains must hold out at least one"),
        ("dataset.test_domains=[0,15,30,45,60,75]", "leave at least one"),
        ("dataset.test_domains=abc", "dataset.test_domains must be a list"),
        ("dataset.test_domains=[1.5]", "dataset.test_domains must be a list of integer"),
        ("dataset.domains=[0,0]", "dataset.domains must be 2 or more distinct"),
        ("dataset.holdout_fraction=1.0", "dataset.holdout_fraction"),
    ],
)
def test_bad_options_are_refused_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        adapter(override)
