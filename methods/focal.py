"""Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"), SubpopBench's
multi-class form: the per-example cross-entropy CE = -log p_t scaled by (1 - p_t)^gamma,
averaged over the batch (no alpha weighting), so well-classified examples count less."""

import torch
import torch.nn.functional as F

from harness.method import Method


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean over the batch of (1 - p_t)^gamma * CE, p_t = exp(-CE) (SubpopBench's Focal)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    return ((1 - torch.exp(-ce)) ** gamma * ce).mean()


class Focal(Method):
    def __init__(self, model, num_classes, num_groups=1, gamma: float = 1.0):
        super().__init__(model, num_classes, num_groups, gamma=gamma)
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or gamma < 0:
            raise ValueError(f"method.gamma must be a number >= 0, got {gamma!r}")
        self.gamma = float(gamma)

    def update(self, batch):
        logits, _ = self.predict(batch["x"])
        loss = focal_loss(logits, batch["y"], self.gamma)
        self.step(loss)
        return {"loss": loss.item()}
