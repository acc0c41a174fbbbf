"""ASH-S (Djurisic et al., 2023): per example, zero the activations below the p-th
percentile of that example's features and scale the rest by exp(sum all / sum kept);
re-apply the head and take the energy. Designed for non-negative (post-ReLU) features:
with negative features the sums can cancel, and the scale is then meaningless, so it is
skipped with a note where the ID features go negative."""

import numpy as np

from harness.scorer import Scorer
from methods.scorers.energy import energy


def prune_and_scale(features: np.ndarray, percentile: float, prune: bool) -> np.ndarray:
    feats = features.astype(np.float64)
    threshold = np.percentile(feats, percentile, axis=1, keepdims=True)
    keep = feats >= threshold
    total = feats.sum(axis=1, keepdims=True)
    kept = np.where(keep, feats, 0.0).sum(axis=1, keepdims=True)
    scale = np.exp(total / np.maximum(kept, 1e-12))
    return (np.where(keep, feats, 0.0) if prune else feats) * scale


class ASH(Scorer):
    needs = ("features", "head", "nonnegative_features")

    def __init__(self, percentile: float = 90.0):
        if not 0 < percentile < 100:
            raise ValueError(f"ash percentile must be in (0, 100), got {percentile}")
        self.percentile = percentile

    def fit(self, data):
        self.head = data.head

    def score(self, outputs):
        return energy(self.head(prune_and_scale(outputs.features, self.percentile, prune=True)))
