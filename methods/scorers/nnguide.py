"""NNGuide (Park et al., 2023): the bank holds normalised ID training features scaled by
their energy; guidance = mean of the k largest inner products of a normalised feature with
the bank; score = energy(logits) × guidance. Exact search, with the same `backend` choice
as KNN (methods/scorers/knn.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from harness.scorer import Scorer
from methods.scorers.knn import TopSimilarities, check_backend, check_faiss_blocks, normalise


class NNGuide(Scorer):
    needs = ("logits", "features")

    def __init__(self, k: int = 10, backend: str = "sklearn", faiss_blocks: Any = None):
        if k < 1:
            raise ValueError(f"nnguide k must be >= 1, got {k}")
        self.k = k
        self.backend = check_backend("nnguide", backend)
        self.blocks = check_faiss_blocks("nnguide", self.backend, faiss_blocks)

    def fit(self, data):
        feats = data.train.features.astype(np.float64)
        train_energy = logsumexp(data.train.logits.astype(np.float64), axis=1)
        bank = normalise(feats) * train_energy[:, None]
        self.k_eff = min(self.k, len(bank))
        self.index = TopSimilarities(bank.astype(np.float32), self.backend, self.blocks)

    def score(self, outputs):
        sims = self.index.search(normalise(outputs.features.astype(np.float32)), self.k_eff)
        guidance = sims.astype(np.float64).mean(axis=1)
        return logsumexp(outputs.logits.astype(np.float64), axis=1) * guidance
