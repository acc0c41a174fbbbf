"""Confidence optimal transport (COT, Lu et al., 2023): the estimated error is the
Wasserstein-1 distance between the target split's softmax vectors and the ID label
distribution (one-hot vectors, weighted by the val class frequencies) under the cost
½‖p − e_y‖₁ = 1 − p_y; the softmax is temperature-scaled on val first, as the paper does.

The transport problem is solved exactly as an assignment (scipy.optimize.linear_sum_assignment):
the m target examples against m one-hot labels whose class counts are m × the val prior
rounded by largest remainders (exact when those are integers; otherwise the marginal is off
by < 1/m per class). Splits longer than `max_batch` are cut into seeded random batches of
at most `max_batch` and the costs averaged by size (the official code's batching, which
keeps the m × m cost matrix small)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import softmax

from harness.estimator import Estimator
from harness.metrics import fit_temperature


def label_counts(prior: np.ndarray, m: int) -> np.ndarray:
    """m × prior rounded to integers summing to m (largest remainders)."""
    raw = np.asarray(prior, dtype=np.float64) * m
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: m - counts.sum()]] += 1
    return counts


def cot_cost(probs: np.ndarray, prior: np.ndarray) -> float:
    """Optimal-transport cost between the rows of `probs` (uniform weights) and one-hot
    labels drawn in the proportions `prior`, under the cost 1 − p_y."""
    labels = np.repeat(np.arange(len(prior)), label_counts(prior, len(probs)))
    cost = 1.0 - probs[:, labels]
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


class COT(Estimator):
    def __init__(self, calibrate: bool = True, max_batch: int = 2000, seed: int = 0):
        if not isinstance(calibrate, bool):
            raise ValueError(f"cot calibrate must be true or false, got {calibrate!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"cot max_batch must be a positive integer, got {max_batch!r}")
        self.calibrate, self.max_batch, self.seed = calibrate, max_batch, seed

    def fit(self, val):
        k = val.logits.shape[1]
        self.prior = np.bincount(val.labels, minlength=k)[:k] / len(val.labels)
        self.temperature = fit_temperature(val.logits, val.labels) if self.calibrate else 1.0

    def estimate(self, outputs):
        probs = softmax(outputs.logits.astype(np.float64) / self.temperature, axis=1)
        n = len(probs)
        order = np.random.default_rng(self.seed).permutation(n)
        batches = np.array_split(order, -(-n // self.max_batch))
        cost = sum(len(b) * cot_cost(probs[np.sort(b)], self.prior) for b in batches) / n
        return 1.0 - cost
