"""Relative Mahalanobis (Ren et al., 2021): the class-conditional distance minus the
distance under one Gaussian fitted to all ID features, which removes what is common."""

import numpy as np

from harness.scorer import Scorer
from methods.scorers.mahalanobis import class_means_and_precision, min_sq_distance


class RelativeMahalanobis(Scorer):
    needs = ("features",)

    def fit(self, data):
        feats = data.train.features.astype(np.float64)
        self.means, self.precision = class_means_and_precision(
            feats, data.train.labels, data.num_classes
        )
        self.mean0, self.precision0 = class_means_and_precision(
            feats, np.zeros(len(feats), dtype=np.int64), 1
        )

    def score(self, outputs):
        feats = outputs.features.astype(np.float64)
        per_class = min_sq_distance(feats, self.means, self.precision)
        background = min_sq_distance(feats, self.mean0, self.precision0)
        return -(per_class - background)
