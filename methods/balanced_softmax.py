"""Balanced softmax (Ren et al. 2020, "Balanced Meta-Softmax for Long-Tailed Visual
Recognition"), as SubpopBench: the training loss is the cross-entropy of logits + log n_y
(n_y: training examples of class y), the prior the softmax would otherwise learn; predictions
are the plain logits, i.e. for balanced classes. A class absent from training counts as one
example (SubpopBench would add log 0)."""

import torch
import torch.nn.functional as F

from harness.method import Method
from methods.class_prior import class_counts


def balanced_softmax_loss(logits: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor):
    prior = torch.log(counts.clamp(min=1)).to(logits.device, logits.dtype)
    return F.cross_entropy(logits + prior, labels)


class BalancedSoftmax(Method):
    def __init__(self, model, num_classes, num_groups=1):
        super().__init__(model, num_classes, num_groups)
        self.counts: torch.Tensor | None = None

    def prepare(self, groups, labels):
        self.counts = class_counts(labels, self.num_classes)

    def update(self, batch):
        if self.counts is None:
            raise RuntimeError("balanced softmax needs the class counts (prepare) first")
        logits, _ = self.predict(batch["x"])
        loss = balanced_softmax_loss(logits, batch["y"], self.counts)
        self.step(loss)
        return {"loss": loss.item()}
