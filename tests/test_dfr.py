"""DFR (methods/probes/dfr.py): the last layer retrained on group-balanced val data from a
backbone's cached features, as a derived run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import harness.run as run_mod
from harness.outputs import Head, Outputs
from harness.rundir import RunDir
from methods.probes.dfr import DFR

from .conftest import TINY, compose_config, run_rows


def spurious(n: int, correlation: float, seed: int):
    """Two classes; feature 0 carries the label weakly for everyone, feature 1 (large) agrees
    with the label for `correlation` of the examples. Groups: label × spurious attribute."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < correlation, y, 1 - y)
    x = np.c_[(2 * y - 1) * 1.0 + rng.normal(0, 1, n), (2 * a - 1) * 3.0 + rng.normal(0, 1, n),
              rng.normal(0, 1, (n, 4))]  # fmt: skip
    out = Outputs(np.zeros((n, 2), np.float32), x.astype(np.float32), y, np.arange(n))
    return out, 2 * y + a


def worst_group(head: Head, out: Outputs, groups: np.ndarray) -> float:
    right = head(out.features.astype(np.float64)).argmax(axis=1) == out.labels
    return min(right[groups == g].mean() for g in np.unique(groups))


def test_dfr_beats_the_spurious_head_on_the_worst_group_and_reports_its_choice():
    train, _ = spurious(2000, 0.95, 0)
    val, val_groups = spurious(800, 0.95, 1)
    test, test_groups = spurious(4000, 0.5, 2)
    erm = LogisticRegression().fit(train.features, train.labels)  # leans on the spurious cue
    base = Head(np.r_[-erm.coef_, erm.coef_] / 2, np.r_[-erm.intercept_, erm.intercept_] / 2)
    head, info = DFR(subsamples=5).fit(train, val, 2, base, val_groups=val_groups)
    assert worst_group(head, test, test_groups) > worst_group(base, test, test_groups) + 0.15
    by_c = info["val_worst_group_accuracy_by_C"]
    assert by_c[str(info["C"])] == max(by_c.values())
    assert info["fit_examples"] + info["selection_examples"] == 800
    # only val is used: other train features give the same head
    other, _ = spurious(50, 0.5, 9)
    again, _ = DFR(subsamples=5).fit(other, val, 2, None, val_groups=val_groups)
    np.testing.assert_array_equal(again.weight, head.weight)
    # the head is linear in the raw features: the standardisation is folded in
    assert head.weight.shape == (2, 6) and np.isfinite(head.weight).all()
    with pytest.raises(ValueError, match="needs a group-labelled val split"):
        DFR().fit(train, None, 2, base)
    with pytest.raises(ValueError, match="probe.subsamples must be a positive integer"):
        DFR(subsamples=0)


def test_dfr_is_a_derived_run_on_the_erm_runs_cache(tmp_path):
    base = [
        *TINY,
        "dataset=coloured_digits",
        "dataset.sizes={train: 200, val: 120, test_balanced: 60, test_reversed: 60}",
        "dataset.limit=null",
        f"results_dir={tmp_path}",
        "eval=minimal",
    ]
    dfr = run_mod.run(compose_config([*base, "probe=dfr", "probe.subsamples=3"]))
    erm = run_mod.run(compose_config(base))  # the backbone: found, not rerun
    assert erm["skipped"]
    rd = RunDir.at(dfr["run_dir"])
    info = json.loads(rd.probe_json.read_text())
    assert info["backbone_run_id"] == erm["run_id"] and info["fit_examples"] == 60
    rows = run_rows(rd.path)
    assert set(rows["method"]) == {"erm+dfr"}
    worst = rows[(rows["metric"] == "worst_group_accuracy") & (rows["split"] == "test_reversed")]
    assert len(worst) == 1 and 0 <= worst["value"].item() <= 1


def test_dfr_runs_of_several_seeds_are_one_setting(tmp_path):
    base = [
        *TINY,
        "dataset=coloured_digits",
        "dataset.sizes={train: 100, val: 80, test_balanced: 40, test_reversed: 40}",
        "dataset.limit=null",
        f"results_dir={tmp_path}",
        "eval=minimal",
        "probe=dfr",
        "probe.subsamples=2",
    ]
    runs = [run_mod.run(compose_config([*base, f"seed={s}"])) for s in (0, 1)]
    keys = [json.loads(RunDir.at(r["run_dir"]).key_json.read_text()) for r in runs]
    assert keys[0]["run_id"] != keys[1]["run_id"]
    assert keys[0]["payload"]["parents"] != keys[1]["payload"]["parents"]
    assert keys[0]["setting_id"] == keys[1]["setting_id"]
