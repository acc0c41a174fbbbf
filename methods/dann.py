"""DANN (Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks") as DomainBed
implements it for domain generalisation (domainbed/algorithms.py: AbstractDANN with
conditional=False, class_balance=False): no gradient-reversal layer, but alternating steps.

A discriminator (an MLP: `mlp_depth` linear layers of width `mlp_width`, ReLU and dropout
`mlp_dropout` between them) predicts the training domain from the penultimate features z.
Its loss is

    L_d = CE(D(z), domain) + grad_penalty · mean_i ‖∂/∂z_i Σ_j CE(D(z_j), domain_j)‖²

(the gradient penalty on the discriminator's input). Updates are counted from 1; update t is
a discriminator step when t mod (1 + d_steps_per_g_step) < d_steps_per_g_step, otherwise a
generator step:
- discriminator step: L_d, stepped by the method's own optimiser (Adam, lr `lr_d`,
  weight decay `weight_decay_d`, betas (`beta1`, 0.9)); it reaches the discriminator only;
- generator step: CE(classifier(z), y) − dann_lambda · L_d, stepped by the runner's
  optimiser (trainer.optimizer: DomainBed's generator optimiser; lr_g is trainer.optimizer.lr)
  over the model's parameters only.

The discriminator's optimiser is method-owned (Method.extra_optimizers): the runner saves its
state in last.pt and restores it on resume; the update counter is a buffer (state_dict).
`dann_lambda` is DomainBed's `lambda` (a Python keyword). `loss` reported on every update is
the classification loss; `disc_loss` beside it.

Unlabeled form (`unlabeled: true`, conf/method/dann_unlabeled.yaml; WILDS 2.0's DANN
with unlabeled data, in DomainBed's alternating form): the unlabeled target batch
(`batch["unlabeled_x"]`, trainer.unlabeled_split) goes through the model in one forward pass
with the labeled batch and is one more domain for the discriminator (output n, after the n
training domains): L_d is over the labeled and the unlabeled features together; the
classification loss over the labeled ones alone. The target's labels never reach the method.

Differences from DomainBed: DomainBed's generator Adam has betas (beta1, 0.9); here the
generator optimiser is trainer.optimizer as configured (AdamW by default). The penalty is
not computed when grad_penalty is 0 (its contribution is exactly zero then).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import autograd, nn

from harness.method import Method


def feature_width(model: nn.Module) -> int:
    """The width of timm's pre-logits features (forward_head(pre_logits=True))."""
    width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not isinstance(width, int):
        raise ValueError("method=dann: the model names no num_features (a timm model does)")
    return width


def mlp(n_in: int, n_out: int, width: int, depth: int, dropout: float) -> nn.Sequential:
    """DomainBed's networks.MLP: input layer, depth − 2 hidden layers, output layer."""
    layers: list[nn.Module] = [nn.Linear(n_in, width), nn.Dropout(dropout), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Dropout(dropout), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, n_out))


def discriminator_loss(
    discriminator: nn.Module, z: torch.Tensor, domains: torch.Tensor, grad_penalty: float
) -> torch.Tensor:
    """CE of the domain prediction plus grad_penalty × the mean squared norm of the input
    gradient of the summed CE (DomainBed's disc_loss)."""
    out = discriminator(z)
    loss = F.cross_entropy(out, domains)
    if grad_penalty > 0:
        (grad,) = autograd.grad(
            F.cross_entropy(out, domains, reduction="sum"), [z], create_graph=True
        )
        loss = loss + grad_penalty * grad.pow(2).sum(1).mean()
    return loss


class DANN(Method):
    domain_batches = True

    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        dann_lambda: float = 1.0,
        lr_d: float = 1e-3,
        weight_decay_d: float = 0.0,
        d_steps_per_g_step: int = 1,
        grad_penalty: float = 0.0,
        beta1: float = 0.5,
        mlp_width: int = 256,
        mlp_depth: int = 3,
        mlp_dropout: float = 0.0,
        unlabeled: bool = False,
    ):
        super().__init__(model, num_classes, num_groups)
        for key, value in (("dann_lambda", dann_lambda), ("weight_decay_d", weight_decay_d),
                           ("grad_penalty", grad_penalty)):  # fmt: skip
            if not value >= 0:
                raise ValueError(f"method.{key} must be >= 0, got {value}")
        if not lr_d > 0:
            raise ValueError(f"method.lr_d must be > 0, got {lr_d}")
        if not 0 <= beta1 < 1:
            raise ValueError(f"method.beta1 must be in [0, 1), got {beta1}")
        for key, value, least in (("d_steps_per_g_step", d_steps_per_g_step, 1),
                                  ("mlp_width", mlp_width, 1), ("mlp_depth", mlp_depth, 2)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"method.{key} must be an integer >= {least}, got {value!r}")
        if not 0 <= mlp_dropout < 1:
            raise ValueError(f"method.mlp_dropout must be in [0, 1), got {mlp_dropout}")
        if not isinstance(unlabeled, bool):
            raise ValueError(f"method.unlabeled must be true or false, got {unlabeled!r}")
        self.unlabeled, self.target_domain = unlabeled, 0
        self.lam, self.grad_penalty = float(dann_lambda), float(grad_penalty)
        self.d_steps = d_steps_per_g_step
        self.disc_options = {"lr": float(lr_d), "weight_decay": float(weight_decay_d),
                             "betas": (float(beta1), 0.9)}  # fmt: skip
        self.mlp_options = {"width": mlp_width, "depth": mlp_depth, "dropout": float(mlp_dropout)}
        self.discriminator: nn.Module | None = None
        self._disc_optimizer: torch.optim.Optimizer | None = None
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))  # resumes

    def prepare_domains(self, domains: np.ndarray) -> None:
        # one output per training domain (DomainBed: num_domains = the training environments)
        n = int(np.max(domains)) + 1 if len(domains) else 1
        self.target_domain = n  # the unlabeled target: one more output
        n_out = n + 1 if self.unlabeled else n
        self.discriminator = mlp(feature_width(self.model), n_out, **self.mlp_options)

    @classmethod
    def uses_unlabeled(cls, options):
        return bool(options.get("unlabeled", False))

    def _disc(self) -> nn.Module:
        if self.discriminator is None:
            raise RuntimeError("the runner calls prepare_domains before training")
        return self.discriminator

    def optimizer_parameters(self) -> list[nn.Parameter]:
        owned = {id(p) for p in self._disc().parameters()}
        return [p for p in self.parameters() if id(p) not in owned]

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._disc_optimizer is None:
            self._disc_optimizer = torch.optim.Adam(self._disc().parameters(), **self.disc_options)
        return {"discriminator": self._disc_optimizer}

    def is_disc_step(self, count: int) -> bool:
        """Update `count` (from 1) trains the discriminator (DomainBed's schedule)."""
        return count % (1 + self.d_steps) < self.d_steps

    def update(self, batch):
        self.update_count += 1
        domains, n = batch["domain"], len(batch["x"])
        if not self.unlabeled:
            logits, z = self.predict(batch["x"])
        else:  # one forward pass; the target's features are domain `target_domain`
            logits, z = self.predict(torch.cat([batch["x"], batch["unlabeled_x"]]))
            target = domains.new_full((len(z) - n,), self.target_domain)
            logits, domains = logits[:n], torch.cat([domains, target])
        if self.grad_penalty > 0 and not z.requires_grad:  # a frozen backbone: still a leaf
            z = z.requires_grad_()
        disc_loss = discriminator_loss(self._disc(), z, domains, self.grad_penalty)
        cls_loss = F.cross_entropy(logits, batch["y"])
        if self.is_disc_step(int(self.update_count)):
            optimizer = self.extra_optimizers()["discriminator"]
            # on the discriminator's parameters alone; fp16 scaling and accumulation as
            # the runner's steps (Method.owned_step)
            self.owned_step("discriminator", optimizer, disc_loss, list(self._disc().parameters()))
        else:
            self.step(cls_loss - self.lam * disc_loss)
        return {"loss": cls_loss.item(), "disc_loss": disc_loss.item()}
