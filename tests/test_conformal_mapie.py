"""Split conformal sets (harness/conformal.py) against mapie 1.6.0's SplitConformalClassifier
on the same probabilities: LAC's threshold and sets; APS's threshold with mapie's own
calibration draws, and its sets where mapie's `include_last_label` options are special
cases of the definition's {y : E(x, y, u) <= q} (u = 0: True; u = 1: False, except that
mapie then keeps the top class in a set that would be empty)."""

from __future__ import annotations

import numpy as np
import pytest
from mapie.classification import SplitConformalClassifier
from sklearn.base import BaseEstimator, ClassifierMixin

from harness import conformal
from methods.conformal.aps import APS
from methods.conformal.lac import LAC

K, N_CAL, N_TEST, SEED = 6, 150, 300, 3


class Probabilities(ClassifierMixin, BaseEstimator):
    """A prefit classifier whose inputs are its probabilities."""

    def __init__(self, k: int = K) -> None:
        self.k = k

    def fit(self, x, y):
        self.classes_, self.n_features_in_ = np.arange(self.k), self.k
        return self

    def predict_proba(self, x):
        return np.asarray(x)

    def predict(self, x):
        return np.asarray(x).argmax(1)


def data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (N_CAL + N_TEST, K))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (rng.random(len(p))[:, None] > np.cumsum(p, 1)).sum(1).clip(0, K - 1)
    return p, y


def mapie_fit(score: str, p: np.ndarray, y: np.ndarray, alpha: float) -> SplitConformalClassifier:
    m = SplitConformalClassifier(
        estimator=Probabilities().fit(p, y),
        confidence_level=1 - alpha,
        conformity_score=score,
        prefit=True,
        random_state=SEED,
    )
    return m.conformalize(p[:N_CAL], y[:N_CAL])


def mapie_threshold(m: SplitConformalClassifier) -> float:
    return float(m._mapie_classifier.conformity_score_function_.quantiles_[0])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_lac_matches_mapie(seed, alpha):
    p, y = data(seed)
    m = mapie_fit("lac", p, y, alpha)
    logits = np.log(p)
    ones = np.ones(len(p))
    q = conformal.threshold(
        conformal.true_label_scores(LAC(), logits[:N_CAL], y[:N_CAL], ones), alpha
    )
    _, sets = m.predict_set(p[N_CAL:])  # mapie computes its quantile when predicting
    assert q == pytest.approx(mapie_threshold(m), abs=1e-9)
    ours = conformal.prediction_sets(LAC(), logits[N_CAL:], ones[N_CAL:], q)
    np.testing.assert_array_equal(ours, sets[:, :, 0])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_aps_matches_mapie(seed, alpha):
    p, y = data(seed)
    m = mapie_fit("aps", p, y, alpha)
    logits = np.log(p)
    # mapie's score is the inclusive mass minus u * p_y with u = RandomState(seed).uniform:
    # the definition's score with u' = 1 - u
    u = 1 - np.random.RandomState(SEED).uniform(size=N_CAL)
    q = conformal.threshold(conformal.true_label_scores(APS(), logits[:N_CAL], y[:N_CAL], u), alpha)
    test = logits[N_CAL:]
    _, without_last = m.predict_set(
        p[N_CAL:], conformity_score_params={"include_last_label": False}
    )
    assert q == pytest.approx(mapie_threshold(m), abs=1e-9)
    ours = conformal.prediction_sets(APS(randomized=False), test, np.ones(N_TEST), q)
    # mapie never returns an empty set here: it keeps the top class where the definition's
    # set is empty (p_max > q)
    empty = ~ours.any(axis=1)
    assert empty.any()  # the case occurs in these data
    ours[empty, test[empty].argmax(axis=1)] = True
    np.testing.assert_array_equal(ours, without_last[:, :, 0])
    _, with_last = m.predict_set(p[N_CAL:], conformity_score_params={"include_last_label": True})
    ours = conformal.prediction_sets(APS(randomized=True), test, np.zeros(N_TEST), q)
    np.testing.assert_array_equal(ours, with_last[:, :, 0])
