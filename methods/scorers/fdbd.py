"""fDBD (Liu & Qin, 2024): the mean over the other classes c of the feature-space distance
to the decision boundary between the predicted class p and c, |z_c − z_p| / ‖w_p − w_c‖,
divided by the distance of the feature to the mean ID training feature."""

from __future__ import annotations

import numpy as np

from harness.scorer import Scorer


class FDBD(Scorer):
    needs = ("features", "head")

    def fit(self, data):
        self.head = data.head
        self.train_mean = data.train.features.astype(np.float64).mean(axis=0)
        w = data.head.weight.astype(np.float64)
        gaps = np.linalg.norm(w[:, None, :] - w[None, :, :], axis=2)  # C × C
        np.fill_diagonal(gaps, 1.0)  # the predicted class's own term is 0 / 1
        self.weight_gaps = gaps

    def score(self, outputs):
        feats = outputs.features.astype(np.float64)
        logits = self.head(feats)
        pred = logits.argmax(axis=1)
        gap = np.abs(logits - logits[np.arange(len(logits)), pred][:, None])
        boundary = (gap / self.weight_gaps[pred]).sum(axis=1) / (logits.shape[1] - 1)
        distance = np.maximum(np.linalg.norm(feats - self.train_mean, axis=1), 1e-8)
        return boundary / distance
