"""Average confidence (AC): the mean maximum softmax probability of the target split."""

from harness.estimator import Estimator
from harness.metrics import msp


class AC(Estimator):
    def estimate(self, outputs):
        return float(msp(outputs.logits).mean())
