"""GradNorm (Huang et al., 2021), in its published form: the L1 norm of the gradient of
the KL divergence between the uniform distribution and softmax(z / T) with respect to the
last layer's weight only. That gradient is the outer product (softmax(z / T) − 1/C) / T ⊗ f,
so its L1 norm is ‖softmax(z / T) − 1/C‖₁ · ‖f‖₁ / T: cache-only, no backward pass."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from harness.scorer import Scorer


class GradNorm(Scorer):
    needs = ("logits", "features")

    def __init__(self, temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"gradnorm temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def score(self, outputs):
        logits = outputs.logits.astype(np.float64)
        p = softmax(logits / self.temperature, axis=1)
        grad_logits = np.abs(p - 1.0 / logits.shape[1]).sum(axis=1) / self.temperature
        return grad_logits * np.abs(outputs.features.astype(np.float64)).sum(axis=1)
