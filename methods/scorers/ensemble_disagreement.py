"""Ensemble disagreement: the fraction of pairs of members whose predicted classes differ
(Fort et al. 2019's disagreement, per example over every pair of the K members), negated so
that agreement scores high. Needs an ensemble's member logits (ensemble=seeds); skipped with
a note for single models."""

import numpy as np

from harness.scorer import Scorer


def pairwise_disagreement(members: np.ndarray) -> np.ndarray:
    """members: K × N × C logits -> N, the share of the K(K-1)/2 pairs that disagree."""
    preds = members.argmax(axis=2)  # K × N
    k = preds.shape[0]
    if k < 2:
        return np.zeros(preds.shape[1])
    # pairs that agree, by class: sum over classes of c(c-1)/2 for c members voting for it
    votes = np.stack([(preds == c).sum(axis=0) for c in range(members.shape[2])])
    agreeing = (votes * (votes - 1) / 2).sum(axis=0)
    return 1.0 - agreeing / (k * (k - 1) / 2)


class EnsembleDisagreement(Scorer):
    needs = ("members",)

    def score(self, outputs):
        return -pairwise_disagreement(outputs.members)
