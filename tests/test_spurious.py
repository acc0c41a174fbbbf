"""The coloured-digits spurious-correlation benchmark: group composition and the evidence
that it is a real target (slow: trains ERM on three seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from shiftbench_datasets.spurious import COLOURS, ColouredDigits

from harness import run as run_mod

from .conftest import CACHE, compose_config, run_rows


def test_groups_follow_the_configured_correlation(tmp_path):
    bench = ColouredDigits(correlation=0.9).load(tmp_path)
    assert bench.group_cols == ["label", "colour"] and bench.classes == ["digit<5", "digit>=5"]
    expected = {"train": 0.9, "val": 0.9, "test_balanced": 0.5, "test_reversed": 0.1}
    seen = set()
    for name, split in bench.splits.items():
        meta = split.meta
        agree = (meta["colour"] == np.array(list(COLOURS))[meta["label"]]).mean()
        assert agree == pytest.approx(expected[name], abs=1 / len(meta))
        assert (
            meta["majority"] == (meta["colour"] == np.array(list(COLOURS))[meta["label"]])
        ).all()
        assert (meta["label"] == (meta["digit"] >= 5)).all()  # no label noise by default
        assert not seen & set(meta["source_index"])  # splits are disjoint
        seen |= set(meta["source_index"])
        image = split.load_image(0)
        corner = tuple(image[0, 0])  # the background carries the colour
        assert corner == COLOURS[meta["colour"].iat[0]]
        assert image.shape == (16, 16, 3)
    assert (
        bench.splits["train"].role == "train" and bench.splits["test_reversed"].role == "shift_test"
    )


def test_label_noise_touches_train_and_val_only(tmp_path):
    bench = ColouredDigits(correlation=0.9, label_noise=0.2).load(tmp_path)
    for name, split in bench.splits.items():
        flipped = (split.meta["label"] != (split.meta["digit"] >= 5)).mean()
        if name in ("train", "val"):
            assert 0.1 < flipped < 0.3
        else:
            assert flipped == 0


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="dataset.correlation must be in"):
        ColouredDigits(correlation=1.5)
    with pytest.raises(ValueError, match="add up to"):
        ColouredDigits(
            sizes={"train": 1500, "val": 200, "test_balanced": 100, "test_reversed": 100}
        )


def worst_group_gap(tmp_path, correlation: float) -> tuple[float, float]:
    gaps, worst = [], []
    for seed in (0, 1, 2):
        summary = run_mod.run(
            compose_config(
                [
                    "dataset=coloured_digits",
                    f"dataset.correlation={correlation}",
                    f"seed={seed}",
                    "eval=minimal",
                    "trainer.progress=false",
                    "threads=2",
                    f"cache_dir={CACHE}",
                    f"results_dir={tmp_path}",
                ]
            )
        )
        rows = run_rows(tmp_path / "runs" / summary["run_id"])
        test = rows[(rows["split"] == "test_balanced") & (rows["scorer"] == "")]
        average = test[(test["metric"] == "accuracy") & (test["group_key"] == "")]["value"].item()
        low = test[test["metric"] == "worst_group_accuracy"]["value"].item()
        gaps.append(average - low)
        worst.append(low)
    return float(np.mean(gaps)), float(np.mean(worst))


@pytest.mark.slow
def test_erm_falls_for_a_strong_correlation_and_less_for_a_weak_one(tmp_path):
    strong, _ = worst_group_gap(tmp_path, 0.95)
    weak, _ = worst_group_gap(tmp_path, 0.8)
    pd.Series({"strong": strong, "weak": weak}).to_json(tmp_path / "gaps.json")
    assert strong >= 0.15
    assert weak < strong
