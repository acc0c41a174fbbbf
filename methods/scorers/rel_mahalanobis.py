"""Relative Mahalanobis (Ren et al., 2021): the class-conditional distance minus the
distance under one Gaussian fitted to all ID features, which removes what is common."""

import numpy as np

from methods.scorers.mahalanobis import Mahalanobis, class_means_and_precision, min_sq_distance


class RelativeMahalanobis(Mahalanobis):
    def fit(self, data):
        super().fit(data)
        feats = data.train.features.astype(np.float64)
        self.mean0, self.precision0 = class_means_and_precision(
            feats, np.zeros(len(feats), dtype=np.int64), 1
        )

    def score(self, outputs):
        background = min_sq_distance(
            outputs.features.astype(np.float64), self.mean0, self.precision0
        )
        return super().score(outputs) + background
