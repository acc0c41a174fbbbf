"""ViM, virtual-logit matching (Wang et al., 2022): the norm of a feature's residual
outside the principal subspace of ID features, scaled to the logits, is a virtual logit;
score = logsumexp(logits) - alpha * residual. Needs the head for the origin -W^+ b."""

import numpy as np
from scipy.special import logsumexp

from harness.scorer import Scorer


class ViM(Scorer):
    min_fit_size = 2  # a principal subspace needs two examples
    needs = ("logits", "features", "head")

    def __init__(self, dim: int | None = None):
        self.dim = dim

    def fit(self, data):
        head = data.head
        feats = data.train.features.astype(np.float64)
        self.origin = -np.linalg.pinv(head.weight) @ head.bias
        centred = feats - self.origin
        _, eigvecs = np.linalg.eigh(centred.T @ centred / len(centred))
        d = feats.shape[1]
        # the paper's default: 1000-dim subspace for wide features, else half the width
        dim = self.dim or (1000 if d >= 2048 else 512 if d >= 768 else d // 2)
        if not 0 < dim < d:
            raise ValueError(f"vim dim must be in 1..{d - 1}, got {dim}")
        self.residual_basis = eigvecs[:, : d - dim]  # eigh sorts ascending: the smallest ones
        residual = np.linalg.norm(centred @ self.residual_basis, axis=1)
        logits = head(feats)
        self.alpha = logits.max(axis=1).mean() / max(residual.mean(), 1e-12)

    def score(self, outputs):
        centred = outputs.features.astype(np.float64) - self.origin
        virtual = self.alpha * np.linalg.norm(centred @ self.residual_basis, axis=1)
        return logsumexp(outputs.logits.astype(np.float64), axis=1) - virtual
