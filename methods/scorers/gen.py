"""GEN, generalised entropy (Liu et al., 2023): minus Σ over the M largest softmax
probabilities of p^γ (1 − p)^γ; higher = more ID. M = null takes every class."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from harness.scorer import Scorer


class GEN(Scorer):
    def __init__(self, gamma: float = 0.1, top_m: int | None = None):
        if not gamma > 0:
            raise ValueError(f"gen gamma must be > 0, got {gamma}")
        if top_m is not None and top_m < 1:
            raise ValueError(f"gen top_m must be >= 1 or null, got {top_m}")
        self.gamma = gamma
        self.top_m = top_m

    def score(self, outputs):
        p = softmax(outputs.logits.astype(np.float64), axis=1).clip(1e-7, 1 - 1e-7)
        if self.top_m is not None and self.top_m < p.shape[1]:
            p = -np.sort(-p, axis=1)[:, : self.top_m]
        return -(p**self.gamma * (1 - p) ** self.gamma).sum(axis=1)
