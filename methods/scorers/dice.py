"""DICE (Sun & Li, 2022): keep only the weights whose contribution to the head, mean ID
activation × weight, is above the p-th percentile of all C × D contributions; re-apply the
sparsified head and take the energy."""

from __future__ import annotations

import numpy as np

from harness.outputs import Head
from harness.scorer import Scorer
from methods.scorers.energy import energy


class DICE(Scorer):
    needs = ("features", "head")

    def __init__(self, percentile: float = 90.0):
        if not 0 <= percentile < 100:
            raise ValueError(f"dice percentile must be in [0, 100), got {percentile}")
        self.percentile = percentile

    def fit(self, data):
        mean_activation = data.train.features.astype(np.float64).mean(axis=0)
        weight = data.head.weight.astype(np.float64)
        contribution = mean_activation[None, :] * weight
        threshold = np.percentile(contribution, self.percentile)
        self.head = Head(np.where(contribution > threshold, weight, 0.0), data.head.bias)

    def score(self, outputs):
        return energy(self.head(outputs.features.astype(np.float64)))
