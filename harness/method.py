"""The training-method interface. A method is a small class: `update(batch)` does one
optimisation step and returns its losses; `predict(x)` gives (logits, features). The
runner owns the loop, the optimiser, checkpoints and logging (DomainBed's split of duties).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from harness.models import forward_outputs

if TYPE_CHECKING:
    from harness.rundir import RunDir


@dataclass(frozen=True)
class Prerequisite:
    """A run this run derives from (harness/derived.py): the overrides that turn this run's
    config into the parent's. `in_key`: the parent's run_id enters this run's key; leave it
    True unless the overrides are a function of options already in this run's key (then the
    run_id adds nothing, and leaving it out keeps keys as they were)."""

    overrides: dict[str, Any]
    in_key: bool = True


class Method(nn.Module):
    """Base class of methods/; subclasses implement `update`.

    `batch` is a dict: x (inputs), y (labels), index (row in the split), group (group id
    from the benchmark's group columns), domain (domain id from the benchmark's domain
    column; the group id where it has none); with trainer.unlabeled_split also unlabeled_x
    (inputs of that split, no labels: harness/unlabeled.py), or unlabeled_<view> for the
    views a method asks for (unlabeled_views). Hyperparameters arrive as keyword arguments from
    the method's YAML (everything but `name` and `_target_`).
    """

    def __init__(self, model: nn.Module, num_classes: int, num_groups: int = 1, **hparams: Any):
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.num_groups = num_groups
        self.optimizer: torch.optim.Optimizer | None = None

    # True: the runner feeds domain-balanced batches (harness.samplers.
    # DomainBalancedBatchSampler), as DomainBed gives its algorithms one minibatch per domain
    domain_batches: bool = False

    # the options unlabeled_views / unlabeled_ratio read at training time (a method that
    # asks for views sets them in __init__ from its own hyperparameters)
    unlabeled_options: dict[str, Any] = {}

    # set by the runner (trainer.accumulate_steps, trainer.precision=fp16); owned_scalers:
    # one GradScaler per method-owned optimiser (extra_optimizers' names), checkpointed
    accumulate_steps: int = 1
    scaler: torch.amp.GradScaler | None = None
    owned_scalers: dict[str, torch.amp.GradScaler] = {}
    _pending: int = 0  # backward passes since the last optimiser step

    # False: the method's steps cannot be accumulated (trainer.accumulate_steps > 1 is
    # refused at config time, harness/method_checks.py), with the reason in `no_accumulation`
    accumulates: bool = True
    no_accumulation: str = ""

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self, loss: torch.Tensor) -> None:
        """zero_grad, backward, step: the common end of update(). With accumulate_steps=k
        the gradients of k calls are averaged (loss / k each) before one optimiser step; with
        a GradScaler (fp16) the loss is scaled and the step unscaled by it."""
        if self.optimizer is None:
            raise RuntimeError("the runner attaches an optimiser before training")
        k = self.accumulate_steps
        if self._pending == 0:
            self.optimizer.zero_grad(set_to_none=True)
        loss = loss / k if k > 1 else loss
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self._pending += 1
        if self._pending >= k:
            self.flush_step()

    def flush_step(self) -> None:
        """The optimiser step of the gradients accumulated so far (the runner calls it at the
        end of each epoch, so no gradient carries over into the next)."""
        for name in list(self.__dict__.get("_owned", {})):  # the owned steps' too
            self._flush_owned(name)
        if self._pending == 0 or self.optimizer is None:
            return
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self._pending = 0

    def owned_step(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        loss: torch.Tensor,
        params: list[nn.Parameter],
        accumulate: bool = True,
    ) -> None:
        """A step of a method-owned optimiser (`name` in extra_optimizers) on the gradient of
        `loss` with respect to `params` alone, as step() does for the runner's: under fp16
        the loss is scaled by the optimiser's own GradScaler (owned_scalers[name]) and the
        step unscaled by it; with accumulate_steps=k the gradients of k calls of this step
        are averaged (loss / k each) before one step. The gradients are kept apart from
        .grad until the step, so other backward passes in between (the runner's steps)
        cannot leak into them. accumulate=False: every call steps."""
        k = self.accumulate_steps if accumulate else 1
        scaler = self.owned_scalers.get(name)
        loss = loss / k if k > 1 else loss
        grads = torch.autograd.grad(
            scaler.scale(loss) if scaler is not None else loss, params, allow_unused=True
        )
        pending = self.__dict__.setdefault("_owned", {}).setdefault(
            name, [optimizer, params, None, 0]
        )
        sums = pending[2] or [None] * len(params)
        pending[2] = [
            g if s is None else (s if g is None else s + g)
            for s, g in zip(sums, grads, strict=True)
        ]
        pending[3] += 1
        if pending[3] >= k:
            self._flush_owned(name)

    def _flush_owned(self, name: str) -> None:
        optimizer, params, sums, count = self.__dict__.get("_owned", {}).pop(name, (None,) * 4)
        if not count:
            return
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, sums, strict=True):
            p.grad = g
        scaler = self.owned_scalers.get(name)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """The parameters the runner's optimiser (trainer.optimizer) steps. Default: all of
        them. A method with optimisers of its own (extra_optimizers) leaves theirs out."""
        return list(self.parameters())

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers the method owns and steps itself in update() (DANN's discriminator),
        by a stable name. The runner calls it once, after moving the method to its device,
        and saves each one's state in last.pt and restores it on resume; build them here,
        once (return the same objects on every call). Default: none."""
        return {}

    def extra_schedulers(self) -> dict[str, Any]:
        """Learning-rate schedules of the extra optimisers (torch LRSchedulers, stepped by
        the method), by name; checkpointed and restored like them. Default: none."""
        return {}

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_outputs(self.model, x)

    def prepare(self, groups: np.ndarray, labels: np.ndarray) -> None:
        """Called once before training with the training split's group ids and labels
        (e.g. to count groups for loss weights). Default: nothing."""

    def prepare_domains(self, domains: np.ndarray) -> None:
        """Called once before training, after prepare(), with the training split's domain
        ids (0..n-1, harness.samplers.domain_ids): modules sized by the number of training
        domains (DANN's discriminator) are built here, before the optimisers. Default:
        nothing."""

    @classmethod
    def uses_unlabeled(cls, options: dict[str, Any]) -> bool:
        """True when the method, with these options (its YAML), trains on batch["unlabeled_x"]:
        the run must then set trainer.unlabeled_split, and other methods must not. Default:
        False."""
        return False

    @classmethod
    def unlabeled_views(cls, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Augmented views of each unlabeled input the method asks for, by name: {view:
        augment config (conf/augment/'s torchvision kinds)}. With any, the runner puts
        batch["unlabeled_<view>"] (each drawn from the raw image, seeded per (seed, epoch,
        example, view): harness/unlabeled.py) in place of batch["unlabeled_x"]; the benchmark's
        refusals apply to each. Default: none (FixMatch: weak and strong)."""
        return {}

    @classmethod
    def unlabeled_ratio(cls, options: dict[str, Any]) -> int:
        """Unlabeled inputs per labeled one: the unlabeled batch is this × trainer.batch_size
        (FixMatch's mu). Default: 1."""
        return 1

    @classmethod
    def prerequisites(cls, options: dict[str, Any]) -> dict[str, Prerequisite]:
        """Runs this method derives from (two-stage methods such as JTT), by name, from its
        options alone (the method's YAML, hyperparameters drawn): each is its own run, found
        by its key or run before this one, so it is shared by every setting that needs the
        same one. Default: none."""
        return {}

    def use_prerequisites(self, runs: dict[str, RunDir]) -> None:
        """Called before training with each prerequisite's finished run directory, by name
        (e.g. `Outputs.load(runs["stage1"].split_output("train"))`: the same training split,
        in the same row order, as this run's)."""

    def train_sampler(
        self,
        groups: np.ndarray,
        labels: np.ndarray,
        epoch: int,
        epochs: int,
        generator: torch.Generator,
    ) -> torch.utils.data.Sampler | None:
        """A sampler of training indices for this epoch (re-balancing); None = shuffle. A
        sampler of whole batches (torch's BatchSampler, or harness.samplers.
        GroupBalancedBatchSampler: n groups per batch) is used as the loader's batch_sampler."""
        return None


def domain_indices(domains: torch.Tensor) -> list[torch.Tensor]:
    """The positions of each domain present in a batch, by ascending domain id: the
    environments (DomainBed's per-domain minibatches) of DG methods."""
    return [torch.nonzero(domains == d).flatten() for d in torch.unique(domains)]
