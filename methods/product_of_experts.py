"""Learning from others' mistakes (Sanh et al. 2021, "Learning from others' mistakes: Avoiding
dataset biases without modeling them"): a product of experts with a deliberately limited
model. The weak model, a linear classifier on the input average-pooled to `weak_pool` ×
`weak_pool` pixels (colour and coarse layout, no shape), learns with its own cross-entropy
alongside; the main model learns through the product, CE(log_softmax(main) +
log_softmax(weak).detach()), so the examples the weak model already gets right carry little
gradient and the ones it gets wrong carry most. Predictions use the main model alone.

The weak model takes its own plain SGD steps (`weak_lr`): with the run's optimiser (AdamW at
a step size meant for the main network) a linear model learns too slowly to be of use within
a short run, and the main network picks up the shortcut first. Plain SGD keeps no state, so a
resumed run continues exactly."""

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import Method


def input_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError("method=product_of_experts: the model has no Conv2d to read in_chans from")
    return first.in_channels


class ProductOfExperts(Method):
    def __init__(self, model, num_classes, num_groups=1, weak_pool: int = 1, weak_lr: float = 0.5):
        super().__init__(model, num_classes, num_groups, weak_pool=weak_pool, weak_lr=weak_lr)
        if not isinstance(weak_pool, int) or weak_pool < 1:
            raise ValueError(f"method.weak_pool must be a positive integer, got {weak_pool!r}")
        if weak_lr <= 0:
            raise ValueError(f"method.weak_lr must be > 0, got {weak_lr}")
        self.weak = nn.Sequential(
            nn.AdaptiveAvgPool2d(weak_pool),
            nn.Flatten(),
            nn.Linear(input_channels(model) * weak_pool**2, num_classes),
        )
        self.weak_optimizer = torch.optim.SGD(self.weak.parameters(), lr=weak_lr)

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        # plain SGD keeps no state; named here so that fp16 gives it a GradScaler of its own
        return {"weak": self.weak_optimizer}

    def update(self, batch):
        x, y = batch["x"], batch["y"]
        logits, _ = self.predict(x)
        weak_logits = self.weak(x)
        product = F.log_softmax(logits, 1) + F.log_softmax(weak_logits, 1).detach()
        main_loss = F.cross_entropy(product, y)
        self.step(main_loss)  # the weak model has no gradient here: the run's optimiser skips it
        weak_loss = F.cross_entropy(weak_logits, y)
        # fp16 scaling and accumulation as the runner's step (Method.owned_step)
        self.owned_step("weak", self.weak_optimizer, weak_loss, list(self.weak.parameters()))
        return {"loss": main_loss.item(), "weak_loss": weak_loss.item()}
