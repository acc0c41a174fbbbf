"""Mixup (Zhang et al., 2018): train on convex combinations of pairs of examples and of
their labels, lambda ~ Beta(alpha, alpha). The pairing and lambda come from torch's RNG,
which the runner seeds per epoch, so runs are reproducible and resumable."""

import torch
import torch.nn.functional as F

from harness.method import Method


class Mixup(Method):
    def __init__(self, model, num_classes, num_groups=1, alpha: float = 0.2):
        super().__init__(model, num_classes, num_groups, alpha=alpha)
        if alpha <= 0:
            raise ValueError(f"method.alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def update(self, batch):
        x, y = batch["x"], batch["y"]
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        perm = torch.randperm(len(y), device=y.device)
        logits, _ = self.predict(lam * x + (1 - lam) * x[perm])
        loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
        self.step(loss)
        return {"loss": loss.item(), "lambda": lam}
