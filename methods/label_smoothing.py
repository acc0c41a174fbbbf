"""Label smoothing (Szegedy et al., 2016): cross-entropy against targets mixed with the
uniform distribution."""

import torch.nn.functional as F

from harness.method import Method


class LabelSmoothing(Method):
    def __init__(self, model, num_classes, num_groups=1, smoothing: float = 0.1):
        super().__init__(model, num_classes, num_groups, smoothing=smoothing)
        if not 0 <= smoothing < 1:
            raise ValueError(f"method.smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def update(self, batch):
        logits, _ = self.predict(batch["x"])
        loss = F.cross_entropy(logits, batch["y"], label_smoothing=self.smoothing)
        self.step(loss)
        return {"loss": loss.item()}
