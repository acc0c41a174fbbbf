"""CVaR DRO (Levy et al. 2020, "Large-Scale Methods for Distributionally Robust
Optimization"), as SubpopBench (its joint_dro.RobustLoss with geometry cvar and no
regulariser): the loss is the mean of the worst `alpha` fraction of the batch's per-example
losses. With m examples, the best-response weights put 1/(alpha m) on the floor(alpha m)
largest losses and the rest of the unit mass on the next one, and the loss is their dot
product with the losses (weights computed without gradient). No group labels."""

import torch
import torch.nn.functional as F

from harness.method import Method


def cvar_weights(losses: torch.Tensor, alpha: float) -> torch.Tensor:
    """The worst-case distribution of the CVaR_alpha uncertainty set over the batch."""
    m = losses.shape[0]
    if alpha >= 1.0:
        return torch.full_like(losses, 1.0 / m)
    cutoff = int(alpha * m)
    p = torch.zeros_like(losses)
    order = torch.argsort(losses, descending=True)
    p[order[:cutoff]] = 1.0 / (alpha * m)
    if cutoff < m:
        p[order[cutoff]] = 1.0 - cutoff / (alpha * m)
    return p


def cvar_loss(losses: torch.Tensor, alpha: float) -> torch.Tensor:
    with torch.no_grad():
        p = cvar_weights(losses.detach(), alpha)
    return torch.dot(p, losses)


class CVaRDRO(Method):
    def __init__(self, model, num_classes, num_groups=1, alpha: float = 0.1):
        super().__init__(model, num_classes, num_groups, alpha=alpha)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1:
            raise ValueError(f"method.alpha must be in (0, 1], got {alpha!r}")
        self.alpha = float(alpha)

    def update(self, batch):
        logits, _ = self.predict(batch["x"])
        losses = F.cross_entropy(logits, batch["y"], reduction="none")
        loss = cvar_loss(losses, self.alpha)
        self.step(loss)
        return {"loss": loss.item(), "mean_loss": losses.mean().item()}
