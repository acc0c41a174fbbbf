"""Mahalanobis score (Lee et al., 2018): class-conditional Gaussians with one shared
covariance on penultimate features; score = -min over classes of the squared distance."""

import numpy as np

from harness.scorer import Scorer


def class_means_and_precision(features, labels, num_classes):
    means = np.stack(
        [
            features[labels == c].mean(axis=0)
            if (labels == c).any()
            else np.full(features.shape[1], np.nan)
            for c in range(num_classes)
        ]
    )
    present = ~np.isnan(means).any(axis=1)
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    return means[present], np.linalg.pinv(covariance, hermitian=True)


def min_sq_distance(features, means, precision, chunk: int = 4096):
    """min_c (x - mu_c)^T P (x - mu_c), in chunks of examples (never N × N)."""
    out = np.empty(len(features))
    for start in range(0, len(features), chunk):
        x = features[start : start + chunk]
        xp = x @ precision
        # (x-mu)^T P (x-mu) = xPx - 2 xPmu + muPmu
        d = (xp * x).sum(1)[:, None] - 2 * xp @ means.T + ((means @ precision) * means).sum(1)[None]
        out[start : start + chunk] = d.min(axis=1)
    return out


class Mahalanobis(Scorer):
    min_fit_size = 2  # a covariance needs two examples
    needs = ("features",)

    def fit(self, data):
        feats = data.train.features.astype(np.float64)
        self.means, self.precision = class_means_and_precision(
            feats, data.train.labels, data.num_classes
        )

    def score(self, outputs):
        return -min_sq_distance(outputs.features.astype(np.float64), self.means, self.precision)
