"""Linear probes (harness/probe.py, methods/probes/logistic.py): a derived run on a backbone
run's cached features, with scikit-learn's logistic regression, C chosen on ID val; WiSE-FT's
linear-classifier interpolation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import harness.run as run_mod
from harness.outputs import Head, Outputs
from harness.rundir import RunDir
from methods.probes.logistic import LogisticProbe

from .conftest import compose_config, run_rows
from .test_clip import clip_overrides


def blobs(seed: int, n: int, classes: int, dim: int = 6) -> Outputs:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = np.random.default_rng(0).normal(0, 2, (classes, dim))
    x = centres[y] + rng.normal(0, 1, (n, dim))
    return Outputs(np.zeros((n, classes), np.float32), x.astype(np.float32), y, np.arange(n))


def test_a_probe_on_a_zero_shot_clip_run_is_a_derived_run_on_its_cache(tmp_path):
    base = clip_overrides(tmp_path, "dataset.limit=60", "eval=minimal")
    probe = run_mod.run(compose_config([*base, "probe=logistic", "probe.Cs=[0.1,10.0]"]))
    rd = RunDir.at(probe["run_dir"])
    key = json.loads(rd.key_json.read_text())["payload"]
    backbone_id = key["parents"]["backbone"]
    assert key["probe"]["Cs"] == [0.1, 10.0]
    backbone = run_mod.run(compose_config(base))  # the same config, probe=none: found, skipped
    assert backbone["skipped"] and backbone["run_id"] == backbone_id != probe["run_id"]
    bd = RunDir.at(backbone["run_dir"])
    # the head is scikit-learn's fit on the backbone's train features with the chosen C
    chosen = json.loads(rd.probe_json.read_text())
    assert chosen["backbone_run_id"] == backbone_id and set(chosen["val_accuracy_by_C"]) == {
        "0.1",
        "10.0",
    }
    assert chosen["val_accuracy_by_C"][str(chosen["C"])] == max(
        chosen["val_accuracy_by_C"].values()
    )
    train = Outputs.load(bd.split_output("train"))
    ref = LogisticRegression(C=chosen["C"], max_iter=1000).fit(train.features, train.labels)
    with np.load(rd.head) as z:
        np.testing.assert_allclose(z["weight"], ref.coef_, rtol=1e-4, atol=1e-5)
    # its Outputs are the backbone's features with the probe's logits
    ours = Outputs.load(rd.split_output("train"))
    np.testing.assert_array_equal(ours.features, train.features)
    np.testing.assert_array_equal(ours.logits.argmax(1), ref.predict(train.features))
    rows = run_rows(rd.path)
    info = json.loads(rd.run_info_json.read_text())
    assert info["method"] == "logistic" and info["run_id"] == probe["run_id"]
    accuracy = rows[(rows["split"] == "train") & (rows["metric"] == "accuracy")]
    assert accuracy["value"].iloc[0] == pytest.approx(ref.score(train.features, train.labels))
    assert {"gen-weather-2", "ood_photos"} <= set(rows["split"])


def test_wise_ft_interpolates_the_heads_and_binary_probes_keep_sklearn_probabilities():
    train, val = blobs(0, 90, 3), blobs(1, 60, 3)
    base = Head(np.ones((3, 6)), np.array([0.0, 1.0, 2.0]))
    probe, info = LogisticProbe(Cs=[1.0]).fit(train, val, 3, base)
    assert info["C"] == 1.0
    zero, _ = LogisticProbe(Cs=[1.0], wise_alpha=0.0).fit(train, val, 3, base)
    half, _ = LogisticProbe(Cs=[1.0], wise_alpha=0.5).fit(train, val, 3, base)
    np.testing.assert_allclose(zero.weight, base.weight)
    np.testing.assert_allclose(half.weight, (base.weight + probe.weight) / 2)
    np.testing.assert_allclose(half.bias, (base.bias + probe.bias) / 2)
    with pytest.raises(ValueError, match="no usable linear head"):
        LogisticProbe(wise_alpha=0.5).fit(train, val, 3, None)
    two = blobs(2, 80, 2)
    head, _ = LogisticProbe(Cs=[1.0]).fit(two, None, 2, None)
    logits = head(two.features.astype(np.float64))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(two.features, two.labels)
    np.testing.assert_allclose(p, ref.predict_proba(two.features), rtol=1e-4, atol=1e-6)


def test_bad_probes_are_refused():
    with pytest.raises(ValueError, match="no example of classes \\[2\\]"):
        LogisticProbe().fit(blobs(0, 40, 2), None, 3, None)
    with pytest.raises(ValueError, match="probe.Cs"):
        LogisticProbe(Cs=[0.0])
    with pytest.raises(ValueError, match="probe.wise_alpha"):
        LogisticProbe(wise_alpha=2.0)


def test_probe_with_tta_is_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one of them"):
        run_mod.run(compose_config([*clip_overrides(tmp_path), "probe=logistic", "tta=tent"]))
