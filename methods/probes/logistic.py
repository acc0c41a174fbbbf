"""The linear probe of robustness papers (Radford et al. 2021; Taori et al. 2020): a
multinomial logistic regression (scikit-learn, L-BFGS) on a backbone's cached features of the
ID train split, the inverse regularisation C chosen by ID val accuracy over a grid. With
`wise_alpha` the head is WiSE-FT's linear-classifier variant (Wortsman et al. 2022):
(1 - α) · the backbone's own head + α · the probe, weights and bias alike."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from harness.outputs import Head, Outputs


class LogisticProbe:
    def __init__(
        self, Cs: list[float] | None = None, max_iter: int = 1000, wise_alpha: float | None = None
    ) -> None:
        self.Cs = [float(c) for c in (Cs or [0.01, 0.1, 1.0, 10.0, 100.0])]
        if not self.Cs or any(c <= 0 for c in self.Cs):
            raise ValueError(f"probe.Cs must be a non-empty list of positive numbers, got {Cs}")
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"probe.max_iter must be a positive integer, got {max_iter!r}")
        if wise_alpha is not None and not 0 <= wise_alpha <= 1:
            raise ValueError(f"probe.wise_alpha must be null or in [0, 1], got {wise_alpha}")
        self.max_iter, self.wise_alpha = max_iter, wise_alpha

    def _fit(self, C: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=self.max_iter).fit(x, y)

    def fit(
        self, train: Outputs, val: Outputs | None, num_classes: int, base: Head | None
    ) -> tuple[Head, dict[str, Any]]:
        """The probe's head (rows in the benchmark's class order) and what was chosen."""
        x, y = train.features.astype(np.float64), train.labels
        missing = sorted(set(range(num_classes)) - set(y.tolist()))
        if missing:
            raise ValueError(
                f"probe: the train split has no example of classes {missing}; a probe cannot "
                "learn them (a larger dataset.limit?)"
            )
        val_accuracy = {}
        if val is not None and len(self.Cs) > 1:
            xv = val.features.astype(np.float64)
            for C in self.Cs:  # the first best C wins ties
                val_accuracy[C] = float((self._fit(C, x, y).predict(xv) == val.labels).mean())
            best = max(self.Cs, key=lambda c: val_accuracy[c])
        else:
            best = self.Cs[0]
        model = self._fit(best, x, y)
        head = Head(model.coef_.astype(np.float64), model.intercept_.astype(np.float64))
        if num_classes == 2:  # scikit-learn's binary model has one row: logit of class 1
            head = Head(
                np.vstack([-head.weight / 2, head.weight / 2]), np.r_[-1, 1] * head.bias / 2
            )
        info = {"C": best, "val_accuracy_by_C": {str(k): v for k, v in val_accuracy.items()}}
        if self.wise_alpha is not None:
            if base is None:
                raise ValueError("probe.wise_alpha: the backbone run stored no usable linear head")
            a = self.wise_alpha
            head = Head(
                (1 - a) * base.weight + a * head.weight, (1 - a) * base.bias + a * head.bias
            )
            info["wise_alpha"] = a
        return head, info
