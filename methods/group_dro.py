"""Group DRO (Sagawa et al., 2020), online: group weights q follow exponentiated gradient
ascent on the group losses, q_g <- q_g exp(eta * loss_g), normalised; the model minimises
the q-weighted sum of group losses. Groups are the benchmark's group columns."""

import torch
import torch.nn.functional as F

from harness.method import Method


class GroupDRO(Method):
    def __init__(self, model, num_classes, num_groups=1, eta: float = 0.01):
        super().__init__(model, num_classes, num_groups, eta=eta)
        if eta <= 0:
            raise ValueError(f"method.eta must be > 0, got {eta}")
        self.eta = eta
        self.register_buffer("q", torch.full((num_groups,), 1.0 / num_groups))  # in checkpoints

    def update(self, batch):
        logits, _ = self.predict(batch["x"])
        losses = F.cross_entropy(logits, batch["y"], reduction="none")
        groups = batch["group"]
        present = torch.unique(groups)
        group_loss = torch.stack([losses[groups == g].mean() for g in present])
        with torch.no_grad():
            self.q[present] *= torch.exp(self.eta * group_loss.detach())
            self.q /= self.q.sum()
        loss = (self.q[present] * group_loss).sum()
        self.step(loss)
        return {"loss": loss.item(), "worst_group_loss": group_loss.max().item()}
