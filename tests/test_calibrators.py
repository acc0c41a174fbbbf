"""Vector and matrix scaling (methods/calibrators/): matrix scaling against scikit-learn's
unpenalised multinomial logistic regression on the same logits, vector scaling against
the identity and temperature scaling (a special case of it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from harness import metrics
from methods.calibrators.matrix import MatrixScaling
from methods.calibrators.temperature import TemperatureScaling
from methods.calibrators.vector import VectorScaling


def miscalibrated(seed: int, n: int = 600, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(a z + c) with a class-dependent a and c, observed logits z:
    not separable, and a per-class affine map recalibrates them."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.5, (n, k))
    true = z * rng.uniform(0.3, 0.9, k) + rng.normal(0, 0.5, k)
    p = np.exp(true - true.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z, y


def sklearn_nll(z: np.ndarray, y: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # `penalty` is being renamed
        lr = LogisticRegression(penalty=None, solver="lbfgs", max_iter=10000, tol=1e-10)
        lr.fit(z, y)
    return float(-np.log(lr.predict_proba(z)[np.arange(len(y)), y]).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_scaling_is_unpenalised_multinomial_logistic_regression(seed):
    z, y = miscalibrated(seed)
    cal = MatrixScaling()
    cal.fit(z, y)
    assert cal.params()["converged"] == 1.0
    ours = metrics.nll(cal.transform(z), y)
    assert ours == pytest.approx(sklearn_nll(z, y), abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vector_scaling_beats_identity_and_matches_or_beats_temperature(seed):
    z, y = miscalibrated(seed)
    vec, ts = VectorScaling(), TemperatureScaling()
    vec.fit(z, y)
    ts.fit(z, y)
    fitted = metrics.nll(vec.transform(z), y)
    assert fitted < metrics.nll(z, y) - 1e-3
    assert fitted <= metrics.nll(ts.transform(z), y) + 1e-9
    # and the diagonal model is no better than the full one on the same data
    mat = MatrixScaling()
    mat.fit(z, y)
    assert metrics.nll(mat.transform(z), y) <= fitted + 1e-9
    # a scalar multiple of the logits is fitted exactly: vector scaling recovers 1/T
    vec.fit(z * 3.0, y)
    ts.fit(z * 3.0, y)
    assert metrics.nll(vec.transform(z * 3.0), y) == pytest.approx(fitted, abs=1e-6)


def test_vector_scaling_transform_is_per_class_affine():
    z, y = miscalibrated(4)
    vec = VectorScaling()
    vec.fit(z, y)
    expected = np.stack([z[:, j] * vec.weight[j] + vec.bias[j] for j in range(z.shape[1])], 1)
    np.testing.assert_allclose(vec.transform(z), expected)


@pytest.mark.parametrize("cls", [VectorScaling, MatrixScaling])
def test_separable_data_gives_finite_logits_and_the_same_predictions(cls):
    # the NLL has no minimum here: the fit must still stop with finite weights
    z = np.eye(3)[[0, 1, 2] * 5] * 5.0
    y = np.array([0, 1, 2] * 5)
    cal = cls(max_iter=50)
    cal.fit(z, y)
    assert np.isfinite(cal.transform(z)).all()
    assert (cal.transform(z).argmax(1) == y).all()
    assert metrics.nll(cal.transform(z), y) < metrics.nll(z, y)


@pytest.mark.parametrize("cls", [VectorScaling, MatrixScaling])
def test_bad_max_iter_is_refused(cls):
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        cls(max_iter=0)
