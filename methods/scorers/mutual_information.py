"""Mutual information between the prediction and the ensemble member (the BALD quantity,
Houlsby et al. 2011; the epistemic part of the predictive entropy, Depeweg et al. 2018):
H(mean_k p_k) − mean_k H(p_k), from each member's softmax; negated so that members that agree
score high. Needs an ensemble's member logits (ensemble=seeds); skipped with a note for
single models."""

import numpy as np
from scipy.special import log_softmax, logsumexp

from harness.scorer import Scorer


def mutual_information(members: np.ndarray) -> np.ndarray:
    """members: K × N × C logits -> N, entropy of the mean minus the mean entropy (nats)."""
    logp = log_softmax(members.astype(np.float64), axis=2)
    mean_logp = logsumexp(logp, axis=0) - np.log(len(logp))  # log of the mean probabilities
    total = -(np.exp(mean_logp) * mean_logp).sum(axis=1)
    expected = -(np.exp(logp) * logp).sum(axis=2).mean(axis=0)
    return np.maximum(total - expected, 0.0)  # >= 0 by Jensen; clip rounding below zero


class MutualInformation(Scorer):
    needs = ("members",)

    def score(self, outputs):
        return -mutual_information(outputs.members)
