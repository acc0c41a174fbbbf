"""coloured_digits_dg (datasets/coloured_digits_dg.py): DomainBed's ColoredMNIST environments
on scikit-learn's digits. Each environment's colour-label agreement and label noise are
measured from the rows against the nominal values, the pixels carry the colour the metadata
names, environments are disjoint and held out without moving the others, and a
leave-one-domain-out run goes through the runner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from shiftbench_datasets.coloured_digits_dg import ColouredDigitsDG
from sklearn.datasets import load_digits

from harness import run as run_mod

from .conftest import TINY, compose_config, run_rows


def _load(**options):
    return ColouredDigitsDG(**options).load(None)


def test_each_environment_has_its_colour_correlation_and_the_label_noise():
    bench = _load(test_domains=[-90])
    rows = {d: [] for d in (90, 80, -90)}
    for split in bench.splits.values():
        for d, part in split.meta.groupby("domain"):
            rows[int(d)].append(part)
    digits = load_digits()
    for d, nominal in ((90, 0.9), (80, 0.8), (-90, 0.1)):
        meta = pd.concat(rows[d])
        n = len(meta)
        assert n in (599, 600)  # 1,797 dealt in turn to three environments
        # the true label from scikit-learn's own targets, not the adapter's column
        truth = (digits.target[meta["source_index"]] >= 5).astype(int)
        noisy = meta["label"].to_numpy() != truth
        agree = (meta["colour"] == "green").to_numpy() == (meta["label"] == 1).to_numpy()
        tol = 4 * np.sqrt(0.25 * 0.75 / n)  # four binomial standard errors
        assert abs(noisy.mean() - 0.25) < tol
        assert abs(agree.mean() - nominal) < 4 * np.sqrt(nominal * (1 - nominal) / n)
    # no label noise: labels are the digits' own
    clean = _load(label_noise=0.0).splits["train"].meta
    assert ((clean["digit"] >= 5).astype(int) == clean["label"]).all()


def test_pixels_carry_the_colour_of_the_metadata():
    split = _load().splits["val"]
    images = np.stack([split.load_image(i) for i in range(len(split))]).astype(int)
    assert images.shape[1:] == (16, 16, 3) and (images[..., 2] == 0).all()
    red, green = images[..., 0].sum((1, 2)), images[..., 1].sum((1, 2))
    colour = np.where(red > green, "red", "green")
    assert (colour == split.meta["colour"].to_numpy()).all()
    assert ((red == 0) | (green == 0)).all()  # one channel each, as DomainBed's two


def test_held_out_environments_do_not_move_the_others():
    a, b = _load(test_domains=[-90]), _load(test_domains=[80])
    assert set(a.splits["test"].meta["domain"]) == {-90}
    assert set(b.splits["test"].meta["domain"]) == {80}
    # the +90 environment: the same train/val rows, labels and colours either way
    for name in ("train", "val"):
        ma, mb = (x.splits[name].meta for x in (a, b))
        ma, mb = (m[m["domain"] == 90].reset_index(drop=True) for m in (ma, mb))
        assert ma.equals(mb)
    # environments hold different digits; train, val and test partition all of them
    sources = np.concatenate([s.meta["source_index"].to_numpy() for s in a.splits.values()])
    assert sorted(sources) == list(range(1797))
    assert ColouredDigitsDG(test_domains=[80, -90]).key_config()["test_domains"] == [-90, 80]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"test_domains": [70]}, "not among dataset.domains"),
        ({"domains": [90, 0, -90]}, "dataset.domains: 0 is not an environment"),
        ({"domains": [90, 150]}, "dataset.domains: 150"),
        ({"test_domains": [90, 80, -90]}, "leave at least one"),
        ({"label_noise": 0.5}, "dataset.label_noise"),
        ({"holdout_fraction": 1.0}, "dataset.holdout_fraction"),
        ({"scale": 0}, "dataset.scale"),
    ],
)
def test_bad_options_are_refused_naming_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        ColouredDigitsDG(**options)


def test_a_held_out_environment_runs_through_the_runner(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=coloured_digits_dg",
                "dataset.test_domains=[80]",
                "eval=minimal",
                f"results_dir={tmp_path}",
            ]
        )
    )
    rows = run_rows(tmp_path / "runs" / summary["run_id"])
    test = rows[(rows["split"] == "test") & (rows["metric"] == "accuracy")]
    assert (test["split_role"] == "shift_test").all() and len(test) >= 1
    assert "worst_group_accuracy" in set(rows["metric"])
