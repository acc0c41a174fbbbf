"""LDAM (Cao et al. 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
Loss"), SubpopBench's form: class j gets the margin m_j = max_m * n_j^(-1/4) / max_k n_k^(-1/4)
(n_j: its training examples; rarer classes get larger margins), subtracted from the true
class's logit, and the loss is the cross-entropy of `scale` times those logits. SubpopBench
applies it to the plain linear logits (the paper normalises features and weights).

DRW (deferred re-weighting, the paper's LDAM-DRW): SubpopBench's LDAM has none, so it is off
by default (`drw_start_fraction: null`); set to f in (0, 1), the last (1 - f) of the epochs
weight each class by the paper's class-balanced weights (1 - beta) / (1 - beta^n_j),
normalised to sum to the number of classes (torch's weighted-mean cross-entropy, as the
paper's code). The epoch is read from `train_sampler`, which the runner calls at the start of
every epoch (also after a resume); LDAM keeps the runner's shuffle."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.method import Method
from methods.class_prior import class_counts


def ldam_margins(counts: torch.Tensor, max_m: float) -> torch.Tensor:
    """m_j ∝ n_j^(-1/4), the largest = max_m; a class without examples gets margin 0."""
    inv = torch.where(counts > 0, counts.clamp(min=1) ** -0.25, torch.zeros_like(counts))
    return inv * (max_m / inv.max())


def drw_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019) as LDAM-DRW uses them, summing to C."""
    effective = 1.0 - beta ** counts.clamp(min=1)
    weights = (1.0 - beta) / effective
    return weights / weights.sum() * len(counts)


def ldam_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    margins: torch.Tensor,
    scale: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    m = margins.to(logits.device, logits.dtype)[labels]
    shifted = logits - F.one_hot(labels, logits.shape[1]).to(logits.dtype) * m[:, None]
    w = None if weight is None else weight.to(logits.device, logits.dtype)
    return F.cross_entropy(scale * shifted, labels, weight=w)


class LDAM(Method):
    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        max_m: float = 0.5,
        scale: float = 30.0,
        drw_start_fraction: float | None = None,
        drw_beta: float = 0.9999,
    ):
        super().__init__(
            model,
            num_classes,
            num_groups,
            max_m=max_m,
            scale=scale,
            drw_start_fraction=drw_start_fraction,
            drw_beta=drw_beta,
        )
        if not max_m > 0:
            raise ValueError(f"method.max_m must be > 0, got {max_m}")
        if not scale > 0:
            raise ValueError(f"method.scale must be > 0, got {scale}")
        if drw_start_fraction is not None and not 0 <= drw_start_fraction < 1:
            raise ValueError(
                f"method.drw_start_fraction must be null or in [0, 1), got {drw_start_fraction}"
            )
        if not 0 < drw_beta < 1:
            raise ValueError(f"method.drw_beta must be in (0, 1), got {drw_beta}")
        self.max_m, self.scale = float(max_m), float(scale)
        self.drw_start_fraction, self.drw_beta = drw_start_fraction, float(drw_beta)
        self.margins: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.reweight = False  # set per epoch (DRW)

    def prepare(self, groups, labels):
        self.counts = class_counts(labels, self.num_classes)
        self.margins = ldam_margins(self.counts, self.max_m)

    def drw_active(self, epoch: int, epochs: int) -> bool:
        f = self.drw_start_fraction
        return f is not None and epoch >= int(f * epochs)

    def train_sampler(self, groups, labels, epoch, epochs, generator):
        self.reweight = self.drw_active(epoch, epochs)  # the epoch, not a sampler
        return None

    def update(self, batch):
        if self.margins is None or self.counts is None:
            raise RuntimeError("LDAM needs the class counts (prepare) first")
        logits, _ = self.predict(batch["x"])
        weight = drw_weights(self.counts, self.drw_beta) if self.reweight else None
        loss = ldam_loss(logits, batch["y"], self.margins, self.scale, weight)
        self.step(loss)
        return {"loss": loss.item()}
