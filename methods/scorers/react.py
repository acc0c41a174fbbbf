"""ReAct (Sun et al., 2021): clip penultimate features at the p-th percentile of ID
activations, re-apply the head, take the energy. Assumes non-negative (post-ReLU)
features: where the ID features go negative (ViTs, CLIP's embeddings) it is skipped with a
note (harness.scorer.inapplicable)."""

import numpy as np

from harness.scorer import Scorer
from methods.scorers.energy import energy


class ReAct(Scorer):
    needs = ("features", "head", "nonnegative_features")

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
