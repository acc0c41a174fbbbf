"""digits_c: embedded digits, generated corruptions per family × severity, OOD sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
from shiftbench_datasets import corruptions as C
from shiftbench_datasets.digits_c import DigitsC

from harness import run as run_mod

from .conftest import TINY, compose_config, run_rows


def small(**kw):
    return DigitsC(limit=9, families=["noise", "digital"], severities=[1, 5], **kw)


def test_splits_roles_and_generated_corruptions(tmp_path):
    from sklearn.datasets import load_digits

    bench = small().load(tmp_path)
    roles = {k: s.role for k, s in bench.splits.items()}
    assert roles == {
        "train": "train",
        "val": "val",
        "id_test": "id_test",
        "gen-noise-1": "shift_test",
        "gen-noise-5": "shift_test",
        "gen-digital-1": "shift_test",
        "gen-digital-5": "shift_test",
        "ood_noise": "ood",
        "ood_photos": "ood",
    }
    digits = load_digits()
    clean = bench.splits["id_test"]
    assert clean.labels.tolist() == digits.target[clean.meta["source_index"]].tolist()
    assert clean.load_image(0).shape == (32, 32, 3)
    # a white digit on black: the upsampled digit's ink is where the 8×8 digit's is
    small_ink = digits.images[clean.meta["source_index"][0]] > 8
    assert clean.load_image(0)[2::4, 2::4, 0][small_ink].mean() > 128
    noise1, noise5 = bench.splits["gen-noise-1"], bench.splits["gen-noise-5"]
    assert noise5.meta["corruption"].tolist()[:3] == list(C.FAMILIES["noise"])
    assert set(noise5.meta["corruption_source"]) == {"generated"}
    assert noise5.labels.tolist() == clean.labels.tolist()

    def change(split):
        return np.mean(
            [np.abs(split.load_image(i) / 1.0 - clean.load_image(i)).mean() for i in range(9)]
        )

    assert 0 < change(noise1) < change(noise5)
    assert (bench.splits["ood_photos"].labels == -1).all()


def test_generation_is_seeded_cached_and_per_corruption_and_severity(tmp_path):
    first = small().load(tmp_path / "a").splits["gen-noise-5"]
    again = small().load(tmp_path / "b").splits["gen-noise-5"]
    reseeded = small(seed=1).load(tmp_path / "c").splits["gen-noise-5"]
    assert all(np.array_equal(first.load_image(i), again.load_image(i)) for i in range(9))
    assert not np.array_equal(first.load_image(0), reseeded.load_image(0))
    cached = list((tmp_path / "a" / "digits_c").glob("*/noise-5.npy"))
    assert len(cached) == 1
    # the cache is what a second load reads
    np.save(cached[0], np.zeros((9, 32, 32, 3), np.uint8))
    assert small().load(tmp_path / "a").splits["gen-noise-5"].load_image(0).max() == 0
    # a severity's images do not depend on which other severities are generated
    images = np.full((2, 32, 32, 3), 128, np.uint8)
    one = C.corrupt_images(images, "gaussian_noise", 3, seed=0)
    assert np.array_equal(one, C.corrupt_images(images, "gaussian_noise", 3, seed=0))
    assert not np.array_equal(one, C.corrupt_images(images, "gaussian_noise", 4, seed=0))
    state = np.random.get_state()[1].copy()
    C.corrupt_images(images, "impulse_noise", 2, seed=0)
    assert np.array_equal(state, np.random.get_state()[1])  # global RNG left as it was


def test_a_tiny_run_on_digits_c(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[weather]",
                "dataset.severities=[2]",
                f"results_dir={tmp_path}",
                f"cache_dir={tmp_path / 'cache'}",
                "eval=minimal",
            ]
        )
    )
    rows = run_rows(tmp_path / "runs" / summary["run_id"])
    roles = dict(zip(rows["split"], rows["split_role"], strict=False))
    assert roles["gen-weather-2"] == "shift_test" and roles["ood_photos"] == "ood"
    ood = rows[(rows["split"] == "ood_photos") & (rows["metric"] == "auroc_vs_id_test")]
    assert len(ood) == 1 and 0 <= ood["value"].item() <= 1
    meta = pd.read_parquet(tmp_path / "runs" / summary["run_id"] / "meta" / "gen-weather-2.parquet")
    assert set(meta["corruption"]) == set(C.FAMILIES["weather"])
