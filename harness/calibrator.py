"""Base class of methods/calibrators/ (configured under `calibrators:` in conf/eval/)."""

from __future__ import annotations

import numpy as np


class Calibrator:
    """Fitted on ID validation logits and labels, maps logits to calibrated logits.
    `params()` are recorded as rows (e.g. temperature). Hyperparameters arrive as keyword
    arguments of the subclass's __init__."""

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def transform(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict[str, float]:
        return {}
