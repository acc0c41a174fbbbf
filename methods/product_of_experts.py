"""Learning from others' mistakes (Sanh et al. 2021, "Learning from others' mistakes: Avoiding
dataset biases without modeling them"): a product of experts with a deliberately limited
model. The weak model, a linear classifier on the input average-pooled to `weak_pool` ×
`weak_pool` pixels (colour and coarse layout, no shape), learns with its own cross-entropy
alongside; the main model learns through the product, CE(log_softmax(main) +
log_softmax(weak).detach()), so the examples the weak model already gets right carry little
gradient and the ones it gets wrong carry most. Predictions use the main model alone."""

import torch.nn.functional as F
from torch import nn

from harness.method import Method


def input_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError("method=product_of_experts: the model has no Conv2d to read in_chans from")
    return first.in_channels


class ProductOfExperts(Method):
    def __init__(self, model, num_classes, num_groups=1, weak_pool: int = 1):
        super().__init__(model, num_classes, num_groups, weak_pool=weak_pool)
        if not isinstance(weak_pool, int) or weak_pool < 1:
            raise ValueError(f"method.weak_pool must be a positive integer, got {weak_pool!r}")
        self.weak = nn.Sequential(
            nn.AdaptiveAvgPool2d(weak_pool),
            nn.Flatten(),
            nn.Linear(input_channels(model) * weak_pool**2, num_classes),
        )

    def update(self, batch):
        x, y = batch["x"], batch["y"]
        logits, _ = self.predict(x)
        weak_logits = self.weak(x)
        product = F.log_softmax(logits, 1) + F.log_softmax(weak_logits, 1).detach()
        main_loss = F.cross_entropy(product, y)
        weak_loss = F.cross_entropy(weak_logits, y)
        self.step(main_loss + weak_loss)
        return {"loss": main_loss.item(), "weak_loss": weak_loss.item()}
