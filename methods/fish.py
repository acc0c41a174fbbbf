"""Fish (Shi et al., 2022, "Gradient Matching for Domain Generalization") as DomainBed
implements it (domainbed/algorithms.py, Fish): per update, a copy of the network (the inner
network) takes one Adam step per environment of the batch, in turn; the network then moves
`meta_lr` of the way to the copy:

    θ ← θ + meta_lr · (θ_inner − θ)

over every entry of the state dict (BatchNorm statistics too, as DomainBed's ParamDict over
`state_dict()`; integer counters rounded down). Its first-order effect is a step along the
sum of the environments' gradients plus a term that raises their inner products.

The inner Adam's state carries over from update to update (DomainBed keeps
`optimizer_inner_state` and loads it into each new inner optimiser): here one inner network
and one Adam persist, the inner weights copied from the network at each update. The inner
Adam is method-owned (Method.extra_optimizers): the runner checkpoints it in last.pt and
restores it on resume. Its learning rate is the runner's current one (trainer.optimizer.lr
under trainer.schedule; DomainBed: hparams lr, constant); its weight decay
`inner_weight_decay` (DomainBed: weight_decay, 0 on small images). The runner's own
optimiser never steps (DomainBed's Fish never steps its outer Adam either).

Environments are the batch's domains (domain-balanced batches), ascending by domain id
(DomainBed: the order of its minibatches; each holds batch_size examples there, here an
equal share of the batch). An environment with a single example in the batch takes no inner
step (a batch smaller than twice the number of domains; with none left, the whole batch is
one step). `loss` is the last environment's, as DomainBed's.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import Method, domain_indices
from harness.models import forward_outputs


class Fish(Method):
    domain_batches = True
    accumulates = False
    no_accumulation = "its update is a loop of inner steps and a meta step, not one gradient"

    def __init__(self, model, num_classes, num_groups=1, meta_lr: float = 0.5,
                 inner_weight_decay: float = 0.0):  # fmt: skip
        super().__init__(model, num_classes, num_groups)
        if not 0 < meta_lr <= 1:
            raise ValueError(f"method.meta_lr must be in (0, 1], got {meta_lr}")
        if not inner_weight_decay >= 0:
            raise ValueError(f"method.inner_weight_decay must be >= 0, got {inner_weight_decay}")
        self.meta_lr, self.inner_weight_decay = float(meta_lr), float(inner_weight_decay)
        self._inner_optimizer: torch.optim.Optimizer | None = None

    def _inner(self) -> nn.Module:
        # not a registered submodule: no part of state_dict, parameters() or .to()
        if "inner" not in self.__dict__:
            object.__setattr__(self, "inner", copy.deepcopy(self.model))
        return self.__dict__["inner"]

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._inner_optimizer is None:
            lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else 1e-3
            self._inner_optimizer = torch.optim.Adam(
                self._inner().parameters(), lr=lr, weight_decay=self.inner_weight_decay
            )
        return {"inner": self._inner_optimizer}

    def update(self, batch):
        inner, optimizer = self._inner(), self.extra_optimizers()["inner"]
        inner.load_state_dict(self.model.state_dict())  # in place: Adam's state stays keyed
        inner.train(self.training)
        if self.optimizer is not None:  # the runner's scheduled learning rate
            for group in optimizer.param_groups:
                group["lr"] = self.optimizer.param_groups[0]["lr"]
        x, y = batch["x"], batch["y"]
        # an environment of one example takes no step of its own (BatchNorm in training mode
        # cannot normalise one example's 1×1 map); with none left, the batch is one
        envs = [e for e in domain_indices(batch["domain"]) if len(e) >= 2]
        for env in envs or [torch.arange(len(y), device=y.device)]:
            logits, _ = forward_outputs(inner, x[env])
            loss = F.cross_entropy(logits, y[env])
            # fp16: through the inner optimiser's own GradScaler (Method.owned_step)
            self.owned_step("inner", optimizer, loss, list(inner.parameters()), accumulate=False)
        with torch.no_grad():
            inner_state = inner.state_dict()
            for name, value in self.model.state_dict().items():
                target = inner_state[name]
                if value.is_floating_point():
                    value.add_(self.meta_lr * (target - value))
                else:  # counters (BatchNorm's num_batches_tracked): rounded down
                    value.copy_((value + self.meta_lr * (target - value).double()).floor())
        return {"loss": loss.item()}
