"""Difference of confidences (DoC, Guillory et al., 2021): validation accuracy minus the drop
in mean maximum softmax probability from validation to the target split."""

from harness.estimator import Estimator
from harness.metrics import msp, predictions


class DoC(Estimator):
    def fit(self, val):
        self.val_accuracy = float((predictions(val.logits) == val.labels).mean())
        self.val_confidence = float(msp(val.logits).mean())

    def estimate(self, outputs):
        return self.val_accuracy - (self.val_confidence - float(msp(outputs.logits).mean()))
