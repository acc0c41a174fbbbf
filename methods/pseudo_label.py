"""Pseudo-labelling (Lee, 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised
Learning Method for Deep Neural Networks") in WILDS 2.0's form (examples/algorithms/
pseudolabel.py): per update, on the labeled batch and the unlabeled target batch
(`batch["unlabeled_x"]`, trainer.unlabeled_split, required),

    loss = CE(f(x), y) + λ_t · mean_i [ 1{max softmax f(u_i) ≥ threshold} · CE(f(u_i), ŷ_i) ]

with ŷ_i = argmax f(u_i) from a pass without gradient (the model in training mode, as
WILDS), the mean over every unlabeled example (unconfident ones count as zero), and
separate forward passes for the labeled batch, the pseudo-labels and the unlabeled loss (as
WILDS). λ_t = `unlabeled_weight` · min(1, t / `rampup_steps`) at update t (from 1), or
`unlabeled_weight` throughout with rampup_steps 0; WILDS ramps linearly over a fraction
(`pseudolabel_T2`, 0.4) of all training steps, which a method does not know here: set
rampup_steps to that many steps. The update counter is a buffer (resumes with the method).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.method import Method


class PseudoLabel(Method):
    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        threshold: float = 0.7,
        unlabeled_weight: float = 1.0,
        rampup_steps: int = 0,
    ):
        super().__init__(model, num_classes, num_groups)
        if not 0 <= threshold <= 1:
            raise ValueError(f"method.threshold must be in [0, 1], got {threshold}")
        if not unlabeled_weight >= 0:
            raise ValueError(f"method.unlabeled_weight must be >= 0, got {unlabeled_weight}")
        if isinstance(rampup_steps, bool) or not isinstance(rampup_steps, int) or rampup_steps < 0:
            raise ValueError(f"method.rampup_steps must be an integer >= 0, got {rampup_steps!r}")
        self.threshold, self.weight = float(threshold), float(unlabeled_weight)
        self.rampup_steps = rampup_steps
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))  # resumes

    @classmethod
    def uses_unlabeled(cls, options):
        return True

    def current_weight(self, count: int) -> float:
        """λ_t at update `count` (from 1): the linear ramp, then unlabeled_weight."""
        if self.rampup_steps == 0:
            return self.weight
        return self.weight * min(1.0, count / self.rampup_steps)

    def pseudo_labels(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ŷ, confident mask) from a pass without gradient."""
        with torch.no_grad():
            probs = F.softmax(self.predict(u)[0].float(), dim=1)
            confidence, labels = probs.max(dim=1)
        return labels, confidence >= self.threshold

    def update(self, batch):
        self.update_count += 1
        u = batch["unlabeled_x"]
        labels, mask = self.pseudo_labels(u)
        classification = F.cross_entropy(self.predict(batch["x"])[0], batch["y"])
        per_example = F.cross_entropy(self.predict(u)[0], labels, reduction="none")
        consistency = (per_example * mask).mean()
        weight = self.current_weight(int(self.update_count))
        self.step(classification + weight * consistency)
        return {
            "loss": classification.item(),
            "unlabeled_loss": consistency.item(),
            "kept_fraction": mask.float().mean().item(),
        }
