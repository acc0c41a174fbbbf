"""Deep feature reweighting (DFR, Kirichenko et al. 2023, "Last Layer Re-Training is
Sufficient for Robustness to Spurious Correlations"), its DFR^Val_Tr form: the last layer
retrained on group-balanced data from the validation split, from a backbone run's cached
features (no forward pass, no retraining of the backbone).

The group-labelled val split is halved (seeded): on the first half, `subsamples`
group-balanced subsamples (each group cut to the smallest group's size) each fit an L1
logistic regression on standardised features, and their weights are averaged; the inverse
strength C is the one with the best worst-group accuracy on the second half. That split then
serves nothing else (its rows in the probe run are fit data, not a test). The standardisation
is folded into the head, so the head stays linear in the cached features. scikit-learn's
liblinear fits one-vs-rest for several classes: the logits are its decision values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from harness.outputs import Head, Outputs


class DFR:
    needs_groups = True  # harness/probe.py passes the val split's group ids

    def __init__(
        self,
        Cs: list[float] | None = None,
        subsamples: int = 10,
        seed: int = 0,
        max_iter: int = 1000,
    ) -> None:
        self.Cs = [float(c) for c in (Cs or [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01])]
        if not self.Cs or any(c <= 0 for c in self.Cs):
            raise ValueError(f"probe.Cs must be a non-empty list of positive numbers, got {Cs}")
        if not isinstance(subsamples, int) or subsamples < 1:
            raise ValueError(f"probe.subsamples must be a positive integer, got {subsamples!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"probe.seed must be a non-negative integer, got {seed!r}")
        self.subsamples, self.seed, self.max_iter = subsamples, seed, max_iter

    def _fit_averaged(
        self, C: float, x: np.ndarray, y: np.ndarray, g: np.ndarray, num_classes: int, rng
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean weight and bias (num_classes rows) over group-balanced subsamples."""
        groups = np.unique(g)
        size = min(int((g == k).sum()) for k in groups)
        weights, biases = [], []
        for _ in range(self.subsamples):
            rows = np.concatenate(
                [rng.choice(np.flatnonzero(g == k), size, replace=False) for k in groups]
            )
            model = LogisticRegression(
                l1_ratio=1.0, C=C, solver="liblinear", max_iter=self.max_iter
            ).fit(x[rows], y[rows])
            w = np.zeros((num_classes, x.shape[1]))
            b = np.full(num_classes, -1e4)  # a class absent from the subsample is never chosen
            if len(model.classes_) == 2:  # one row: the logit of classes_[1]
                w[model.classes_[1]], b[model.classes_[1]] = model.coef_[0], model.intercept_[0]
                w[model.classes_[0]], b[model.classes_[0]] = 0.0, 0.0
            else:
                w[model.classes_], b[model.classes_] = model.coef_, model.intercept_
            weights.append(w)
            biases.append(b)
        return np.mean(weights, axis=0), np.mean(biases, axis=0)

    def fit(
        self,
        train: Outputs,
        val: Outputs | None,
        num_classes: int,
        base: Head | None,
        val_groups: np.ndarray | None = None,
    ) -> tuple[Head, dict[str, Any]]:
        if val is None or val_groups is None:
            raise ValueError("probe=dfr needs a group-labelled val split (DFR fits on it)")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(val.labels))
        fit_rows, select_rows = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
        x = val.features.astype(np.float64)
        mean, std = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0) + 1e-8
        z = (x - mean) / std
        y, g = val.labels, np.asarray(val_groups)
        worst: dict[float, float] = {}
        fitted = {}
        for C in self.Cs:
            w, b = self._fit_averaged(C, z[fit_rows], y[fit_rows], g[fit_rows], num_classes, rng)
            pred = (z[select_rows] @ w.T + b).argmax(axis=1)
            right = pred == y[select_rows]
            worst[C] = float(
                min(right[g[select_rows] == k].mean() for k in np.unique(g[select_rows]))
            )
            fitted[C] = (w, b)
        best = max(self.Cs, key=lambda c: worst[c])  # the first best C wins ties
        w, b = fitted[best]
        # fold the standardisation into the head: w·(x − μ)/σ + b = (w/σ)·x + (b − w·μ/σ)
        head = Head(w / std, b - (w / std) @ mean)
        info = {
            "C": best,
            "val_worst_group_accuracy_by_C": {str(k): v for k, v in worst.items()},
            "fit_examples": int(len(fit_rows)),
            "selection_examples": int(len(select_rows)),
        }
        return head, info
