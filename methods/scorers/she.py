"""SHE, simplified Hopfield energy (Zhang et al., 2023): the stored pattern of class c is
the mean feature of the ID training examples of class c that the model classifies
correctly; score = ⟨f, pattern of the predicted class⟩. A class without a correctly
classified example stores the mean of its examples, and one without any stores zeros
(score 0)."""

from __future__ import annotations

import numpy as np

from harness.scorer import Scorer


class SHE(Scorer):
    needs = ("logits", "features")

    def fit(self, data):
        feats = data.train.features.astype(np.float64)
        labels = data.train.labels
        correct = data.train.logits.argmax(axis=1) == labels
        self.patterns = np.zeros((data.num_classes, feats.shape[1]))
        for c in range(data.num_classes):
            rows = (labels == c) & correct
            if not rows.any():
                rows = labels == c
            if rows.any():
                self.patterns[c] = feats[rows].mean(axis=0)

    def score(self, outputs):
        pred = outputs.logits.argmax(axis=1)
        return (outputs.features.astype(np.float64) * self.patterns[pred]).sum(axis=1)
