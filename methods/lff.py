"""Learning from Failure (Nam et al. 2020, "Learning from Failure: Training Debiased
Classifier from Biased Classifier"), as SubpopBench: a biased model of the same
architecture is trained alongside with the generalised cross-entropy, which amplifies its
reliance on easy (bias-aligned) examples, and the debiased model -- the one evaluated -- is
trained on the cross-entropy weighted per example by the relative difficulty
W = CE_b / (CE_b + CE_d) (both detached): examples the biased model gets wrong weigh most.

GCE is the authors' form, CE · p_y^q · q with p_y detached: its gradient is q times that of
(1 - p_y^q) / q. SubpopBench (and this) uses each batch's losses as they are, without the
paper's per-class exponential moving average. The biased model starts as a copy of the
model (the same initial or pretrained weights; SubpopBench draws a fresh one) and is
trained by the run's optimiser with the same settings (SubpopBench: a second SGD with the
same hyperparameters, the same thing for disjoint parameters). No group labels."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from harness.method import Method
from harness.models import forward_outputs


def generalized_ce(logits: torch.Tensor, labels: torch.Tensor, q: float) -> torch.Tensor:
    """Per-example GCE in the authors' gradient form: CE · p_y^q (p_y detached) · q."""
    p_y = F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).detach()
    return F.cross_entropy(logits, labels, reduction="none") * p_y**q * q


def relative_difficulty(ce_biased: torch.Tensor, ce_debiased: torch.Tensor) -> torch.Tensor:
    return (ce_biased / (ce_biased + ce_debiased + 1e-8)).detach()


class LfF(Method):
    def __init__(self, model, num_classes, num_groups=1, q: float = 0.7):
        super().__init__(model, num_classes, num_groups, q=q)
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q <= 1:
            raise ValueError(f"method.q must be in (0, 1], got {q!r}")
        self.q = float(q)
        self.biased_model = copy.deepcopy(model)  # a parameter set of the method: checkpointed

    def update(self, batch):
        x, y = batch["x"], batch["y"]
        logits, _ = self.predict(x)
        biased_logits, _ = forward_outputs(self.biased_model, x)
        ce_b = F.cross_entropy(biased_logits, y, reduction="none")
        ce_d = F.cross_entropy(logits, y, reduction="none")
        weights = relative_difficulty(ce_b, ce_d)
        loss_pred = (ce_d * weights).mean()
        loss_gce = generalized_ce(biased_logits, y, self.q).mean()
        loss = loss_pred + loss_gce
        self.step(loss)
        return {"loss": loss.item(), "loss_pred": loss_pred.item(), "loss_gce": loss_gce.item()}
