"""Maximum softmax probability (Hendrycks & Gimpel, 2017)."""

from harness.metrics import msp
from harness.scorer import Scorer


class MSP(Scorer):
    def score(self, outputs):
        return msp(outputs.logits)
