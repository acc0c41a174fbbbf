"""Multi-layer Mahalanobis (Lee et al., 2018, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", without input preprocessing and with
equal layer weights, as pytorch-ood's MultiMahalanobis): per stage ℓ, the stage's feature
map averaged over space, class means μ_ℓk and one shared covariance Σ_ℓ fitted on ID
training data; the score is −½ Σ_ℓ min_k (f_ℓ − μ_ℓk)ᵀ Σ_ℓ⁻¹ (f_ℓ − μ_ℓk) (higher = ID).

A model scorer: the per-stage maps come from timm's forward_intermediates, in a pass of
its own per split during `harness.run` (harness/forward.py fits it on the train split's
stages first, labels included). Not done: the stages in the Outputs cache (so that it
would be cache-only) and Lee et al.'s logistic-regression layer weights, which need OOD
validation data."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from harness.scorer import Scorer


def pooled_stages(
    model: torch.nn.Module, x: torch.Tensor, stages: Sequence[int] | None
) -> list[np.ndarray]:
    """Each stage's feature map of timm's forward_intermediates, averaged over space."""
    maps = model.forward_intermediates(x, intermediates_only=True)
    chosen = maps if stages is None else [maps[i] for i in stages]
    return [m.flatten(2).mean(dim=2).double().cpu().numpy() for m in chosen]


class MultiMahalanobis(Scorer):
    needs = ("model", "stage_features")

    def __init__(self, stages: list[int] | None = None):
        if stages is not None and not (
            isinstance(stages, list)
            and stages
            and all(isinstance(s, int) and not isinstance(s, bool) for s in stages)
        ):
            raise ValueError(
                f"mahalanobis_multi stages must be null or a list of stage indices, got {stages!r}"
            )
        self.stages = stages

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
            d = f[:, None, :] - mu[None, :, :]  # N × K × D
            md = np.einsum("nkd,de,nke->nk", d, prec, d)
            total += -0.5 * md.min(axis=1)
        return total

    def fit_model(
        self, model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        """Fit on ID training batches (inputs, labels) through the model's stages."""
        parts, labels = [], []
        with torch.no_grad():
            for x, y in batches:
                parts.append(pooled_stages(model, x, self.stages))
                labels.append(y.cpu().numpy())
        self.fit_stages(
            [np.concatenate(p) for p in zip(*parts, strict=True)], np.concatenate(labels)
        )

    def score_model(self, model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> np.ndarray:
        with torch.no_grad():
            scores = [self.score_stages(pooled_stages(model, x, self.stages)) for x in batches]
        return np.concatenate(scores) if scores else np.zeros(0)
