"""ReAct (Sun et al., 2021): clip penultimate features at the p-th percentile of ID
activations, re-apply the head, take the energy. Assumes non-negative (post-ReLU)
features: on models whose features go negative (ViTs) only the upper side is clipped."""

import numpy as np

from harness.scorer import Scorer
from methods.scorers.energy import energy


class ReAct(Scorer):
    needs = ("features", "head")

    def __init__(self, percentile: float = 90.0):
        if not 0 < percentile <= 100:
            raise ValueError(f"react percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile

    def fit(self, data):
        self.head = data.head
        self.threshold = float(np.percentile(data.train.features, self.percentile))

    def score(self, outputs):
        clipped = np.minimum(outputs.features.astype(np.float64), self.threshold)
        return energy(self.head(clipped))
