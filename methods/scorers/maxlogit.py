"""The largest logit (Hendrycks et al., 2022, "Scaling out-of-distribution detection")."""

from harness.scorer import Scorer


class MaxLogit(Scorer):
    def score(self, outputs):
        return outputs.logits.max(axis=1).astype("float64")
