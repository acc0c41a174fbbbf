"""Post-hoc metrics against independent references: scikit-learn, pytorch-ood, brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood.metrics import OODMetrics
from scipy.special import softmax
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from harness import metrics

rng = np.random.default_rng(0)


def brute_fpr95(id_scores, other_scores):
    """Over every threshold, the highest one accepting >= 95% of ID: the fraction of the
    other set it accepts."""
    best = None
    for t in np.unique(np.r_[id_scores, other_scores]):
        if np.mean(id_scores >= t) >= 0.95:
            best = t if best is None else max(best, t)
    return float(np.mean(other_scores >= best))


def brute_aurc(scores, correct):
    """Mean over examples of the risk of the set accepted at that example's score."""
    return float(np.mean([np.mean(~correct[scores >= s]) for s in scores]))


CASES = {
    "random": (rng.normal(1, 1, 300), rng.normal(0, 1, 200)),
    "ties": (rng.integers(0, 4, 300).astype(float), rng.integers(0, 3, 200).astype(float)),
    "all_equal": (np.zeros(50), np.zeros(40)),
    "separable": (np.arange(10, 20.0), np.arange(0, 10.0)),
}


@pytest.mark.parametrize("case", CASES)
def test_ood_metrics_match_sklearn_and_brute_force(case):
    id_s, other_s = CASES[case]
    got = metrics.ood_metrics(id_s, other_s)
    y = np.r_[np.ones(len(id_s)), np.zeros(len(other_s))]
    s = np.r_[id_s, other_s]
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["aupr_in"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert got["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    assert got["fpr95"] == pytest.approx(brute_fpr95(id_s, other_s), abs=1e-12)


@pytest.mark.parametrize("case", ["random", "ties", "separable"])
def test_ood_metrics_agree_with_pytorch_ood(case):
    """pytorch-ood treats OOD as positive with outlier scores; with the roles swapped (our ID
    set as its positive class, our ID score as its outlier score) AUROC and FPR@95 must be
    the same numbers. Its AUPR integrates by the trapezoidal rule, ours is scikit-learn's
    average precision (a step sum): the test shows the gap is exactly the integration rule."""
    id_s, other_s = CASES[case]
    ours = metrics.ood_metrics(id_s, other_s)
    ref = OODMetrics()
    ref.update(
        torch.tensor(np.r_[id_s, other_s]),
        torch.tensor(np.r_[-np.ones(len(id_s)), np.zeros(len(other_s))]).long(),
    )
    theirs = ref.compute()
    assert ours["auroc"] == pytest.approx(theirs["AUROC"], abs=1e-6)
    assert ours["fpr95"] == pytest.approx(theirs["FPR95TPR"], abs=1e-6)
    y = np.r_[np.ones(len(id_s)), np.zeros(len(other_s))]
    precision, recall, _ = precision_recall_curve(y, np.r_[id_s, other_s])
    assert auc(recall, precision) == pytest.approx(theirs["AUPR-OUT"], abs=1e-6)


def test_ood_metrics_refuse_non_finite_scores_and_handle_empty_sides():
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.ood_metrics(np.array([0.1, np.nan]), np.array([0.2]))
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.ood_metrics(np.array([0.1]), np.array([np.inf]))
    assert metrics.ood_metrics(np.array([]), np.array([0.2])) is None


@pytest.mark.parametrize("tied", [False, True])
def test_aurc_and_e_aurc_against_brute_force(tied):
    scores = rng.integers(0, 5, 200).astype(float) if tied else rng.normal(size=200)
    correct = rng.random(200) < 0.7
    assert metrics.aurc(scores, correct) == pytest.approx(brute_aurc(scores, correct))
    # any ranking has e_aurc >= 0, even one that ties all errors together below the rest
    assert metrics.e_aurc(scores, correct) >= 0
    assert metrics.e_aurc(correct.astype(float), correct) >= 0
    # the order of tied examples does not matter
    perm = rng.permutation(200)
    assert metrics.aurc(scores[perm], correct[perm]) == pytest.approx(metrics.aurc(scores, correct))


def test_accuracy_at_coverage():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=bool)
    assert metrics.accuracy_at_coverage(scores, correct, 0.5) == 1.0
    assert metrics.accuracy_at_coverage(scores, correct, 0.8) == pytest.approx(7 / 8)
    assert metrics.accuracy_at_coverage(scores, correct, 1.0) == pytest.approx(0.7)
    # all scores tied: every coverage accepts everything
    assert metrics.accuracy_at_coverage(np.zeros(10), correct, 0.1) == pytest.approx(0.7)


def test_single_class_selective_metrics():
    correct = np.ones(20, dtype=bool)
    assert metrics.aurc(rng.normal(size=20), correct) == 0.0
    assert metrics.auroc(np.ones(20), np.array([])) is None


def test_brier_and_temperature_scaling():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]))
    labels = np.array([0, 2])
    expected = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.8**2 + 0.9**2)) / 2
    assert metrics.brier(logits, labels) == pytest.approx(expected)
    # labels drawn from softmax(z / 3): the fitted temperature must come back near 3
    z = rng.normal(0, 4, size=(20000, 5))
    p = softmax(z / 3.0, axis=1)
    y = np.array([rng.choice(5, p=row) for row in p])
    assert metrics.fit_temperature(z, y) == pytest.approx(3.0, rel=0.08)


def test_atc_threshold_matches_validation_accuracy():
    scores = rng.random(1000)
    correct = rng.random(1000) < 0.73
    t = metrics.atc_threshold(scores, correct)
    assert np.mean(scores > t) == pytest.approx(0.73, abs=0.002)
    assert metrics.atc_estimate(t, scores) == pytest.approx(0.73, abs=0.002)


def test_risk_at_coverages_matches_brute_force():
    scores = rng.integers(0, 6, 300).astype(float)
    correct = rng.random(300) < 0.6
    grid = np.linspace(0.01, 1.0, 100)
    got = metrics.risk_at_coverages(scores, correct, grid)
    for c, risk in zip(grid, got, strict=True):
        # the highest threshold whose accepted set covers at least c
        t = max(t for t in np.unique(scores) if np.mean(scores >= t) >= c - 1e-12)
        assert risk == pytest.approx(np.mean(~correct[scores >= t]))


def test_e_aurc_of_a_perfect_ranking_with_distinct_scores_is_zero():
    correct = np.r_[np.ones(90, bool), np.zeros(10, bool)]
    scores = np.linspace(1.0, 0.0, 100)  # every correct example above every error
    assert metrics.e_aurc(scores, correct) == pytest.approx(0.0, abs=1e-12)
    assert metrics.oracle_aurc(correct) == pytest.approx(brute_aurc(scores, correct))
    assert metrics.e_aurc(rng.normal(size=100), correct) > 0
