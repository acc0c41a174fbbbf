"""SCALE (Xu et al., 2024): like ASH-S it scales each example's activations by
exp(sum all / sum above the p-th percentile), but prunes nothing; re-apply the head and
take the energy. Same caveat as ASH for features that can be negative."""

from harness.scorer import Scorer
from methods.scorers.ash import prune_and_scale
from methods.scorers.energy import energy


class SCALE(Scorer):
    needs = ("features", "head", "nonnegative_features")

    def __init__(self, percentile: float = 85.0):
        if not 0 < percentile < 100:
            raise ValueError(f"scale percentile must be in (0, 100), got {percentile}")
        self.percentile = percentile

    def fit(self, data):
        self.head = data.head

    def score(self, outputs):
        return energy(self.head(prune_and_scale(outputs.features, self.percentile, prune=False)))
