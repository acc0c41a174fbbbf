"""Nuclear-norm score (Deng et al., 2023, "Confidence and Dispersity Speak"): the nuclear
norm of the split's N × K softmax matrix, normalised to [0, 1] by sqrt(N · min(N, K));
high when predictions are both confident and spread over the classes.

The paper turns it into an accuracy estimate with a linear regression fitted on synthetic
meta-sets (transformed copies of ID data) with their labels. Here that needs
`meta_splits`: fnmatch patterns of labelled shift_test splits of the run that play the
meta-sets (e.g. generated corruptions, harness.prepare); the regression (scikit-learn's
LinearRegression) is fitted on their (score, accuracy) pairs and those splits get no
rows of this estimator. Without meta_splits it is a score only: rows `nuclear_norm`,
no estimated accuracy (a score on another scale would make abs_error meaningless)."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from harness.estimator import Estimator
from harness.metrics import accuracy


def nuclear_norm_score(logits: np.ndarray) -> float:
    """‖softmax(logits)‖_* / sqrt(N · min(N, K))."""
    p = softmax(logits.astype(np.float64), axis=1)
    n, k = p.shape
    return float(np.linalg.svd(p, compute_uv=False).sum() / np.sqrt(n * min(n, k)))


class NuclearNorm(Estimator):
    def __init__(self, meta_splits: list[str] | None = None):
        if meta_splits is not None and not (
            isinstance(meta_splits, list)
            and meta_splits
            and all(isinstance(p, str) for p in meta_splits)
        ):
            raise ValueError(
                f"nuclear_norm meta_splits must be null or a non-empty list of split-name "
                f"patterns, got {meta_splits!r}"
            )
        self.meta_splits = list(meta_splits) if meta_splits else None
        self.score_metric = None if self.meta_splits else "nuclear_norm"

    def fit_meta(self, meta):
        from sklearn.linear_model import LinearRegression

        if len(meta) < 2:
            raise ValueError(
                f"nuclear_norm: the regression needs at least 2 meta-set splits, found {sorted(meta)}"
            )
        x = np.array([[nuclear_norm_score(o.logits)] for o in meta.values()])
        y = np.array([accuracy(o.logits, o.labels) for o in meta.values()])
        self.regression = LinearRegression().fit(x, y)

    def estimate(self, outputs):
        score = nuclear_norm_score(outputs.logits)
        if self.meta_splits is None:
            return score
        return float(self.regression.predict([[score]])[0])
