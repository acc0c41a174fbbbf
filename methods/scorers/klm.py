"""KL matching (Hendrycks et al., 2022): d_k, the mean softmax of the ID examples predicted
as class k, is the typical posterior of class k; score = −min_k KL(p ‖ d_k). Fitted on ID
validation, as the paper does (on ID train where a run has no val split)."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax, xlogy

from harness.scorer import Scorer


class KLMatching(Scorer):
    def fit(self, data):
        fit_on = data.val if data.val is not None else data.train
        p = softmax(fit_on.logits.astype(np.float64), axis=1)
        pred = p.argmax(axis=1)
        # classes never predicted have no typical posterior and are left out
        self.typical = np.stack([p[pred == k].mean(axis=0) for k in np.unique(pred)])

    def score(self, outputs):
        p = softmax(outputs.logits.astype(np.float64), axis=1)
        log_d = np.log(np.maximum(self.typical, np.finfo(np.float64).tiny))
        # KL(p ‖ d_k) = Σ p log p − Σ p log d_k, for every k at once
        kl = xlogy(p, p).sum(axis=1, keepdims=True) - p @ log_d.T
        return -kl.min(axis=1)
