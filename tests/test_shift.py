"""Shift analysis (harness/shift.py): BBSE and MLLS recover a known class prior from exact
Bayes posteriors; the MMD permutation test's statistic matches its textbook formula, its
p-value is ~uniform under the null and small under a mean shift; eval=shift end to end on
digits_c, KS rows recomputed with scipy.stats.ks_2samp; bad settings refused."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.spatial.distance import cdist, pdist
from scipy.special import softmax
from scipy.stats import ks_2samp, kstest

import harness.run as run_mod
from harness import shift
from harness.config import validate_eval
from harness.posthoc import load_run_cache

from .conftest import TINY, compose_config, run_rows

MEANS = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def gaussian_sample(prior, n, rng):
    """Three unit-variance Gaussian classes in 2-D and their exact Bayes posteriors under
    the uniform source prior (log-posterior = -|x - mean|²/2 + const)."""
    labels = rng.choice(3, size=n, p=prior)
    x = MEANS[labels] + rng.standard_normal((n, 2))
    logits = -0.5 * cdist(x, MEANS, "sqeuclidean")
    return logits, labels


@pytest.mark.parametrize("target_prior", [[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
def test_bbse_and_mlls_recover_a_known_prior(target_prior):
    rng = np.random.default_rng(0)
    source = np.full(3, 1 / 3)
    val_logits, val_labels = gaussian_sample(source, 20000, rng)
    logits, labels = gaussian_sample(target_prior, 20000, rng)
    true = np.bincount(labels, minlength=3) / len(labels)
    source_prior = np.bincount(val_labels, minlength=3) / len(val_labels)
    est_bbse = shift.bbse_prior(val_logits.argmax(1), val_labels, logits.argmax(1), 3)
    probs = softmax(logits, axis=1)
    est_mlls = shift.mlls_prior(probs, source_prior)
    assert np.abs(est_bbse - true).sum() < 0.05
    assert np.abs(est_mlls - true).sum() < 0.05
    assert est_bbse.sum() == pytest.approx(1) and est_mlls.sum() == pytest.approx(1)
    # the Bayes correction with the true prior's estimate beats the uncorrected argmax
    corrected = shift.corrected_predictions(probs, est_mlls, source_prior)
    assert np.mean(corrected == labels) > np.mean(logits.argmax(1) == labels) + 0.01


def test_mlls_without_shift_stays_at_the_source_prior():
    rng = np.random.default_rng(1)
    logits, labels = gaussian_sample(np.full(3, 1 / 3), 30000, rng)
    est = shift.mlls_prior(softmax(logits, axis=1), np.full(3, 1 / 3))
    assert np.abs(est - 1 / 3).max() < 0.02


def test_mmd_statistic_is_the_textbook_biased_estimate():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((15, 4)), rng.standard_normal((12, 4)) + 0.5
    mmd2, _ = shift.mmd_permutation_test(x, y, permutations=10)
    h = np.median(pdist(np.concatenate([x, y]), "sqeuclidean"))
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / h)  # noqa: E731
    expected = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert mmd2 == pytest.approx(expected, rel=1e-9)


def test_mmd_p_value_is_uniform_under_the_null_and_small_under_a_shift():
    rng = np.random.default_rng(3)
    null_p = [
        shift.mmd_permutation_test(
            rng.standard_normal((20, 3)), rng.standard_normal((20, 3)), 99, seed=i
        )[1]
        for i in range(150)
    ]
    assert kstest(null_p, "uniform").pvalue > 0.01
    assert 0.01 <= np.mean(np.array(null_p) < 0.05) <= 0.12
    shifted = [
        shift.mmd_permutation_test(
            rng.standard_normal((30, 3)), rng.standard_normal((30, 3)) + 1.0, 99, seed=i
        )[1]
        for i in range(20)
    ]
    assert np.mean(np.array(shifted) < 0.05) > 0.9


def test_ks_bonferroni_is_the_smallest_column_p_times_the_columns():
    rng = np.random.default_rng(4)
    a, b = rng.random((40, 5)), rng.random((30, 5)) ** 1.5
    expected = min(1.0, 5 * min(ks_2samp(a[:, j], b[:, j]).pvalue for j in range(5)))
    assert shift.ks_bonferroni(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"alpha": 1.5}, "eval.shift.alpha"),
        ({"permutations": 0}, "eval.shift.permutations"),
        ({"calibrator": "nope"}, "eval.shift.calibrator"),
        ({"label_shift": "yes"}, "eval.shift.label_shift"),
        ({"alpah": 0.1}, "unknown settings"),
    ],
)
def test_bad_shift_settings_are_refused(entry, message):
    ev = OmegaConf.to_container(compose_config(["eval=shift"]).eval, resolve=True)
    ev["shift"].update(entry)
    with pytest.raises(ValueError, match=message):
        validate_eval(ev)


def test_shift_eval_end_to_end_on_digits_c(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[5]",
                f"results_dir={tmp_path / 'res'}",
                f"cache_dir={tmp_path / 'cache'}",
                "eval=shift",
                "eval.fit_size=40",
                "eval.scorers.knn.k=5",
                "eval.shift.permutations=50",
            ]
        )
    )
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    cache = load_run_cache(run_dir)
    val = cache.outputs[cache.splits("val")[0]]
    temp = rows[(rows["scorer"] == "temperature_scaling") & (rows["metric"] == "temperature")]
    t = temp["value"].item()
    tested = cache.splits("id_test", "shift_test", "ood")
    assert cache.splits("shift_test") and cache.splits("ood")
    for split in tested:
        out = cache.outputs[split]
        sel = rows[(rows["split"] == split) & (rows["scorer"] == "ks_softmax")]
        got = dict(zip(sel["metric"], sel["value"], strict=True))
        ref, tgt = softmax(val.logits / t, axis=1), softmax(out.logits / t, axis=1)
        pmin = min(ks_2samp(ref[:, j], tgt[:, j]).pvalue for j in range(ref.shape[1]))
        expected = min(1.0, ref.shape[1] * pmin)
        assert got["p_value"] == pytest.approx(expected, rel=1e-6)
        assert got["shift_detected"] == float(expected < 0.05)
        mmd = rows[(rows["split"] == split) & (rows["scorer"] == "mmd_features")]
        assert set(mmd["metric"]) == {"mmd2", "p_value", "shift_detected"}
    labelled = cache.splits("id_test", "shift_test")
    for split in labelled:
        out = cache.outputs[split]
        true = np.bincount(out.labels, minlength=10) / len(out.labels)
        for name in ("bbse", "mlls"):
            sel = rows[(rows["split"] == split) & (rows["scorer"] == name)]
            assert set(sel["metric"]) == {
                "prior_l1_error",
                "prior_l2_error",
                "accuracy_prior_corrected",
            }
        est = shift.mlls_prior(
            softmax(out.logits / t, axis=1), np.bincount(val.labels, minlength=10) / len(val.labels)
        )
        sel = rows[(rows["split"] == split) & (rows["scorer"] == "mlls")]
        l1 = sel[sel["metric"] == "prior_l1_error"]["value"].item()
        assert l1 == pytest.approx(np.abs(est - true).sum(), rel=1e-6)
    # eval=default of the same run has none of these rows
    default = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[5]",
                f"results_dir={tmp_path / 'res2'}",
                f"cache_dir={tmp_path / 'cache'}",
                "eval.fit_size=40",
                "eval.scorers.knn.k=5",
            ]  # fmt: skip
        )
    )
    plain = run_rows(tmp_path / "res2" / "runs" / default["run_id"])
    assert not set(plain["scorer"]) & {"bbse", "mlls", "ks_softmax", "mmd_features"}
