"""COT and the nuclear-norm score (methods/estimators/): COT's assignment equals the
transportation linear program solved by scipy.optimize.linprog; the nuclear-norm score is
numpy's nuclear norm normalised; eval=shift's estimator rows end to end on digits_c, with
the nuclear-norm regression on meta-set splits checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.special import softmax
from sklearn.linear_model import LinearRegression

import harness.run as run_mod
from harness.metrics import accuracy, fit_temperature
from harness.outputs import Outputs
from harness.posthoc import load_run_cache
from methods.estimators.cot import COT, cot_cost, label_counts
from methods.estimators.nuclear_norm import NuclearNorm, nuclear_norm_score

from .conftest import TINY, compose_config, run_rows


def transport_lp(probs, prior):
    """min Σ π_iy (1 − p_iy) s.t. rows sum to 1/m, columns to prior, π ≥ 0."""
    m, k = probs.shape
    cost = (1.0 - probs).ravel()
    a_rows = np.kron(np.eye(m), np.ones(k))
    a_cols = np.kron(np.ones(m), np.eye(k))
    res = linprog(cost, A_eq=np.vstack([a_rows, a_cols]),
                  b_eq=np.concatenate([np.full(m, 1 / m), prior]), bounds=(0, None))  # fmt: skip
    assert res.status == 0
    return res.fun


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cot_assignment_equals_the_transport_lp(seed):
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(size=(20, 4)) * 2, axis=1)
    prior = np.array([0.25, 0.25, 0.3, 0.2])  # × 20 is integral: the assignment is exact
    assert cot_cost(probs, prior) == pytest.approx(transport_lp(probs, prior), abs=1e-9)
    odd = np.array([0.33, 0.27, 0.23, 0.17])  # not integral: off by < k/m at most
    assert abs(cot_cost(probs, odd) - transport_lp(probs, odd)) < 4 / 20


def test_label_counts_sum_and_round():
    counts = label_counts(np.array([0.33, 0.27, 0.23, 0.17]), 20)
    assert counts.sum() == 20 and np.all(
        np.abs(counts - 20 * np.array([0.33, 0.27, 0.23, 0.17])) < 1
    )


def test_cot_estimate_without_calibration_and_batches():
    rng = np.random.default_rng(3)
    val = Outputs(rng.normal(size=(60, 3)).astype(np.float32), np.zeros((60, 2), np.float32),
                  rng.integers(0, 3, 60), np.arange(60))  # fmt: skip
    target = Outputs(rng.normal(size=(30, 3)).astype(np.float32), np.zeros((30, 2), np.float32),
                     rng.integers(0, 3, 30), np.arange(30))  # fmt: skip
    est = COT(calibrate=False)
    est.fit(val)
    prior = np.bincount(val.labels, minlength=3) / 60
    probs = softmax(target.logits.astype(np.float64), axis=1)
    assert est.estimate(target) == pytest.approx(1 - transport_lp(probs, prior), abs=3 / 30)
    # batches of 10: the size-weighted mean of three exact problems, seeded
    batched = COT(calibrate=False, max_batch=10, seed=5)
    batched.fit(val)
    order = np.random.default_rng(5).permutation(30)
    expected = np.mean([cot_cost(probs[np.sort(b)], prior) for b in np.array_split(order, 3)])
    assert batched.estimate(target) == pytest.approx(1 - expected)
    cal = COT()
    cal.fit(val)
    assert cal.temperature == pytest.approx(fit_temperature(val.logits, val.labels))


def test_nuclear_norm_score_is_the_normalised_nuclear_norm():
    rng = np.random.default_rng(4)
    for n, k in ((50, 4), (3, 10)):
        logits = rng.normal(size=(n, k)) * 3
        p = softmax(logits, axis=1)
        assert nuclear_norm_score(logits) == pytest.approx(
            np.linalg.norm(p, "nuc") / np.sqrt(n * min(n, k))
        )
    # one-hot predictions spread evenly over the classes: the maximum, 1
    assert nuclear_norm_score(np.eye(4).repeat(5, axis=0) * 1e3) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [[], "corrupt_*", [1]])
def test_nuclear_norm_refuses_bad_meta_splits(bad):
    with pytest.raises(ValueError, match="meta_splits"):
        NuclearNorm(meta_splits=bad)


def test_estimators_end_to_end_on_digits_c(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[1,3,5]",
                f"results_dir={tmp_path / 'res'}",
                f"cache_dir={tmp_path / 'cache'}",
                "eval=shift",
                "eval.fit_size=40",
                "eval.scorers.knn.k=5",
                "eval.shift.permutations=20",
                "+eval.estimators.nuclear_norm_reg={_target_: methods.estimators.nuclear_norm.NuclearNorm, meta_splits: ['*-1', '*-3']}",
            ]
        )
    )
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    cache = load_run_cache(run_dir)
    shifted = cache.splits("shift_test")
    meta = [s for s in shifted if s.endswith(("-1", "-3"))]
    targets = [s for s in shifted if s not in meta] + cache.splits("id_test")
    assert len(meta) >= 2 and targets
    val = cache.outputs[cache.splits("val")[0]]

    def value(split, scorer, metric):
        sel = rows[(rows.split == split) & (rows.scorer == scorer) & (rows.metric == metric)]
        assert len(sel) == 1, (split, scorer, metric)
        return sel["value"].item()

    cot = COT()
    cot.fit(val)
    x = [[nuclear_norm_score(cache.outputs[s].logits)] for s in meta]
    reg = LinearRegression().fit(
        x, [accuracy(cache.outputs[s].logits, cache.outputs[s].labels) for s in meta]
    )
    for split in targets:
        out = cache.outputs[split]
        true = accuracy(out.logits, out.labels)
        assert value(split, "cot", "estimated_accuracy") == pytest.approx(cot.estimate(out))
        assert value(split, "cot", "abs_error") == pytest.approx(abs(cot.estimate(out) - true))
        assert value(split, "nuclear_norm", "nuclear_norm") == pytest.approx(
            nuclear_norm_score(out.logits)
        )
        assert not len(
            rows[
                (rows.split == split)
                & (rows.scorer == "nuclear_norm")
                & (rows.metric == "abs_error")
            ]
        )
        guess = reg.predict([[nuclear_norm_score(out.logits)]])[0]
        assert value(split, "nuclear_norm_reg", "estimated_accuracy") == pytest.approx(guess)
    for split in meta:  # fitted on: no rows of the regression
        assert not len(rows[(rows.split == split) & (rows.scorer == "nuclear_norm_reg")])
        assert len(rows[(rows.split == split) & (rows.scorer == "cot")]) == 3
