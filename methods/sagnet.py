"""SagNet (Nam et al., 2021, "Reducing Domain Gap by Reducing Style Bias") as DomainBed
implements it (domainbed/algorithms.py, SagNet; the feature-level form DomainBed uses for
every backbone, not the paper's ResNet split at layer4): the network's penultimate features
z (the featurizer f) feed the content head c (the model's own classifier) and a style head s
(a linear layer of the same shape). Each update, on the whole batch:

1. content: CE(c(SR(z)), y), SR = style randomisation: each example's features normalised
   by its own mean and variance over the feature dimension, then given
   α·(μ, σ²) + (1 − α)·(μ', σ'²) of a random partner, α ~ U(0, 1) per example; stepped on
   f and c (the runner's optimiser, trainer.optimizer: DomainBed's optimizer_f and _c);
2. style: CE(s(CR(z)), y), CR = content randomisation: the partner's normalised features
   (detached) with the example's own mean and variance; stepped on s only (the method's
   own Adam: lr `lr_s`, DomainBed's lr; weight decay `weight_decay_s`);
3. adversary: `sag_w_adv` · mean over examples of −mean_k log softmax(s(CR(z)))_k (the
   cross-entropy to the uniform distribution), stepped on f only (the runner's optimiser
   again; the content head has no gradient there, so it stays).

The style head's optimiser is method-owned (Method.extra_optimizers: checkpointed, restored
on resume). The runner's optimiser steps twice per update (content, adversary), the schedule
once. `loss` reported is the content loss; `loss_s`, `loss_adv` beside it. Prediction is the
plain network, c(f(x)). trainer.accumulate_steps > 1 is refused at config time (the two
runner steps of an update would merge); trainer.precision=fp16 scales the runner's steps by
its GradScaler and the style head's by one of its own (Method.owned_step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import Method
from methods.dann import feature_width


def randomize(z: torch.Tensor, what: str, eps: float = 1e-5) -> torch.Tensor:
    """DomainBed's SagNet.randomize on (N, D) features: `style` mixes each example's mean and
    variance (over D) with a random partner's, `content` gives it the partner's normalised
    features (detached) under its own statistics. Draws: α = torch.rand, then randperm."""
    alpha = torch.rand(z.shape[0], 1, device=z.device, dtype=z.dtype)
    mean, var = z.mean(-1, keepdim=True), z.var(-1, keepdim=True)
    x = (z - mean) / (var + eps).sqrt()
    swap = torch.randperm(z.shape[0], device=z.device)
    if what == "style":
        mean = alpha * mean + (1 - alpha) * mean[swap]
        var = alpha * var + (1 - alpha) * var[swap]
    else:
        x = x[swap].detach()
    return x * (var + eps).sqrt() + mean


class SagNet(Method):
    accumulates = False
    no_accumulation = (
        "its update takes two steps of the runner's optimiser (content, adversary), which "
        "accumulation would merge"
    )

    domain_batches = True  # DomainBed's batch: the training domains' minibatches, pooled

    def __init__(self, model, num_classes, num_groups=1, sag_w_adv: float = 0.1,
                 lr_s: float = 1e-3, weight_decay_s: float = 0.0):  # fmt: skip
        super().__init__(model, num_classes, num_groups)
        if not sag_w_adv >= 0:
            raise ValueError(f"method.sag_w_adv must be >= 0, got {sag_w_adv}")
        if not lr_s > 0:
            raise ValueError(f"method.lr_s must be > 0, got {lr_s}")
        if not weight_decay_s >= 0:
            raise ValueError(f"method.weight_decay_s must be >= 0, got {weight_decay_s}")
        self.w_adv, self.lr_s, self.wd_s = float(sag_w_adv), float(lr_s), float(weight_decay_s)
        self.style_head = nn.Linear(feature_width(model), num_classes)
        self._style_optimizer: torch.optim.Optimizer | None = None

    def optimizer_parameters(self) -> list[nn.Parameter]:
        owned = {id(p) for p in self.style_head.parameters()}
        return [p for p in self.parameters() if id(p) not in owned]

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._style_optimizer is None:
            self._style_optimizer = torch.optim.Adam(
                self.style_head.parameters(), lr=self.lr_s, weight_decay=self.wd_s
            )
        return {"style": self._style_optimizer}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True).flatten(1)

    def update(self, batch):
        x, y = batch["x"], batch["y"]
        # 1. content: f and c on style-randomised features
        loss_c = F.cross_entropy(self._classify(randomize(self._features(x), "style")), y)
        self.step(loss_c)
        # 2. style: the style head on content-randomised features
        style = self.extra_optimizers()["style"]
        loss_s = F.cross_entropy(self.style_head(randomize(self._features(x), "content")), y)
        self.owned_step("style", style, loss_s, list(self.style_head.parameters()))
        # 3. adversary: f towards features whose style says nothing of the class
        logp = F.log_softmax(self.style_head(randomize(self._features(x), "content")), dim=1)
        loss_adv = self.w_adv * -logp.mean(1).mean()
        self.step(loss_adv)
        self.style_head.zero_grad(set_to_none=True)  # its share of the adversary's gradient
        return {"loss": loss_c.item(), "loss_s": loss_s.item(), "loss_adv": loss_adv.item()}

    def _classify(self, z: torch.Tensor) -> torch.Tensor:
        """The model's classifier on pre-logit features (timm: the head's last layer)."""
        return self.model.get_classifier()(z)
