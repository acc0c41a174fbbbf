"""KNN (Sun et al., 2022): minus the distance to the k-th nearest ID training example,
on L2-normalised features. scikit-learn's brute-force search works in chunks, so no
N × N matrix is built."""

import numpy as np
from sklearn.neighbors import NearestNeighbors

from harness.scorer import Scorer


def normalise(features):
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norm, 1e-12)


class KNN(Scorer):
    needs = ("features",)

    def __init__(self, k: int = 50):
        if k < 1:
            raise ValueError(f"knn k must be >= 1, got {k}")
        self.k = k

    def fit(self, data):
        train = normalise(data.train.features.astype(np.float32))
        self.k_eff = min(self.k, len(train))
        self.index = NearestNeighbors(n_neighbors=self.k_eff, algorithm="brute").fit(train)

    def score(self, outputs):
        dist, _ = self.index.kneighbors(normalise(outputs.features.astype(np.float32)))
        return -dist[:, -1].astype(np.float64)
