"""Multi-layer Mahalanobis (Lee et al., 2018, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", without input preprocessing and with
equal layer weights, as pytorch-ood's MultiMahalanobis): per stage ℓ, the stage's feature
map averaged over space, class means μ_ℓk and one shared covariance Σ_ℓ fitted on ID
training data; the score is −½ Σ_ℓ min_k (f_ℓ − μ_ℓk)ᵀ Σ_ℓ⁻¹ (f_ℓ − μ_ℓk) (higher = ID).

Cache-only: it needs "stage_features", so the run's forward pass records each timm stage's
pooled output (the modules of feature_info, harness/stages.py) into the Outputs cache, in
the same pass as the logits; it fits on the eval config's ID training subset (fit_size).
Not done: Lee et al.'s logistic-regression layer weights, which need OOD validation data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from harness.outputs import Outputs
from harness.scorer import FitData, Scorer
from methods.scorers.mahalanobis import min_sq_distance


def pooled_stages(
    model: torch.nn.Module, x: torch.Tensor, stages: Sequence[int] | None
) -> list[np.ndarray]:
    """Each stage's feature map of timm's forward_intermediates, averaged over space (an
    independent route to what the forward pass caches, for tests and notebooks)."""
    maps = model.forward_intermediates(x, intermediates_only=True)
    chosen = maps if stages is None else [maps[i] for i in stages]
    return [m.detach().flatten(2).mean(dim=2).double().cpu().numpy() for m in chosen]


class MultiMahalanobis(Scorer):
    needs = ("stage_features",)
    min_fit_size = 2  # a covariance needs two examples

    # `fit` names what the class statistics are fitted on. It is an option (in the eval_id) because
    # the earlier model-scorer form fitted on the whole train split: results of the two must not
    # share an eval_id. Only the cache's fit subset exists now.
    FITS = ("fit_subset",)

    def __init__(self, stages: list[int] | None = None, fit: str = "fit_subset"):
        if fit not in self.FITS:
            raise ValueError(f"mahalanobis_multi fit must be one of {self.FITS}, got {fit!r}")
        if stages is not None and not (
            isinstance(stages, list)
            and stages
            and all(isinstance(s, int) and not isinstance(s, bool) for s in stages)
        ):
            raise ValueError(
                f"mahalanobis_multi stages must be null or a list of stage indices, got {stages!r}"
            )
        self.stages = stages

    def chosen(self, outputs: Outputs) -> list[np.ndarray]:
        if outputs.stages is None:
            raise ValueError("mahalanobis_multi: these outputs have no per-stage features cached")
        try:
            picked = (
                outputs.stages if self.stages is None else [outputs.stages[i] for i in self.stages]
            )
        except IndexError:
            raise ValueError(
                f"mahalanobis_multi stages {self.stages}: the model has "
                f"{len(outputs.stages)} stages"
            ) from None
        return [f.astype(np.float64) for f in picked]

    def fit_stages(self, feats: list[np.ndarray], labels: np.ndarray) -> None:
        """Class means and the shared (pooled within-class) covariance of each stage."""
        self.means, self.precisions = [], []
        classes = np.unique(labels[labels >= 0])
        for f in feats:
            mu = np.stack([f[labels == k].mean(axis=0) for k in classes])
            centred = f[labels >= 0] - mu[np.searchsorted(classes, labels[labels >= 0])]
            cov = centred.T @ centred / len(centred)
            self.means.append(mu)
            self.precisions.append(np.linalg.pinv(cov, hermitian=True))

    def score_stages(self, feats: list[np.ndarray]) -> np.ndarray:
        total = np.zeros(len(feats[0]))
        for f, mu, prec in zip(feats, self.means, self.precisions, strict=True):
            total += -0.5 * min_sq_distance(f, mu, prec)  # in chunks of examples
        return total

    def fit(self, data: FitData) -> None:
        self.fit_stages(self.chosen(data.train), data.train.labels)

    def score(self, outputs: Outputs) -> np.ndarray:
        return self.score_stages(self.chosen(outputs))
