"""Negative predictive entropy: confident (low-entropy) predictions score high."""

from harness.metrics import negative_entropy
from harness.scorer import Scorer


class Entropy(Scorer):
    def score(self, outputs):
        return negative_entropy(outputs.logits)
