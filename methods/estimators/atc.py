"""Average thresholded confidence (ATC, Garg et al., 2022): the fraction of the target split
whose score is above the threshold fitted on validation so that the fraction of validation
above it equals validation accuracy. `score`: msp (ATC-MC, maximum confidence) or
negative_entropy (ATC-NE)."""

from harness import metrics
from harness.estimator import Estimator

SCORES = {"msp": metrics.msp, "negative_entropy": metrics.negative_entropy}


class ATC(Estimator):
    def __init__(self, score: str):
        if score not in SCORES:
            raise ValueError(f"atc score must be one of {sorted(SCORES)}, got {score!r}")
        self.score = SCORES[score]

    def fit(self, val):
        correct = metrics.predictions(val.logits) == val.labels
        self.threshold = metrics.atc_threshold(self.score(val.logits), correct)

    def estimate(self, outputs):
        return metrics.atc_estimate(self.threshold, self.score(outputs.logits))
