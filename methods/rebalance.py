"""Re-balancing over groups or classes, both ways, as compared in "Upsample or Upweight?
Balanced Training on Heavily Imbalanced Datasets": a unit u (group or class) with n_u
training examples gets the share p_u ∝ n_u^(1/T) of the training signal. T = 1 is the
natural distribution, T -> infinity uniform over units.

- Upsample: each example is drawn with probability ∝ n_u^(1/T - 1) (with replacement, one
  epoch = as many draws as examples). `cooldown_temperature` replaces T for the last
  `cooldown_fraction` of the epochs (the paper's "cooldown": less aggressive late on).
- Upweight: examples keep their natural frequency and the loss of each is weighted by
  n_u^(1/T - 1), normalised to mean 1 over the training set. In expectation over batches the
  two give the same loss (tested).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import WeightedRandomSampler

from harness.method import Method

UNITS = ("group", "class")


def unit_weights(units: np.ndarray, temperature: float) -> np.ndarray:
    """Per-example weight n_u^(1/T - 1), normalised to mean 1."""
    counts = np.bincount(units)
    w = counts[units].astype(np.float64) ** (1.0 / temperature - 1.0)
    return w / w.mean()


class _Rebalance(Method):
    def __init__(
        self, model, num_classes, num_groups=1, by: str = "group", temperature: float = 1e9, **extra
    ):
        super().__init__(model, num_classes, num_groups, by=by, temperature=temperature, **extra)
        if by not in UNITS:
            raise ValueError(f"method.by must be one of {UNITS}, got {by!r}")
        if temperature <= 0:
            raise ValueError(f"method.temperature must be > 0, got {temperature}")
        self.by, self.temperature = by, temperature

    def units(self, groups, labels):
        return np.asarray(groups if self.by == "group" else labels, dtype=np.int64)

    def update(self, batch):
        logits, _ = self.predict(batch["x"])
        losses = F.cross_entropy(logits, batch["y"], reduction="none")
        loss = (self.batch_weights(batch) * losses).mean()
        self.step(loss)
        return {"loss": loss.item()}

    def batch_weights(self, batch):
        return torch.ones(len(batch["y"]), device=batch["y"].device)


class Upsample(_Rebalance):
    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        by: str = "group",
        temperature: float = 1e9,
        cooldown_temperature: float | None = None,
        cooldown_fraction: float = 0.0,
    ):
        super().__init__(
            model,
            num_classes,
            num_groups,
            by=by,
            temperature=temperature,
            cooldown_temperature=cooldown_temperature,
            cooldown_fraction=cooldown_fraction,
        )
        if not 0 <= cooldown_fraction <= 1:
            raise ValueError(f"method.cooldown_fraction must be in [0, 1], got {cooldown_fraction}")
        self.cooldown_temperature, self.cooldown_fraction = cooldown_temperature, cooldown_fraction

    def temperature_at(self, epoch: int, epochs: int) -> float:
        cooling = self.cooldown_temperature is not None and epoch >= epochs * (
            1 - self.cooldown_fraction
        )
        return self.cooldown_temperature if cooling else self.temperature

    def train_sampler(self, groups, labels, epoch, epochs, generator):
        weights = unit_weights(self.units(groups, labels), self.temperature_at(epoch, epochs))
        return WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_samples=len(weights),
            replacement=True,
            generator=generator,
        )


class Upweight(_Rebalance):
    def prepare(self, groups, labels):
        self.units_of = self.units(groups, labels)
        self.register_buffer(
            "weights",
            torch.as_tensor(unit_weights(self.units_of, self.temperature), dtype=torch.float32),
        )

    def batch_weights(self, batch):
        return self.weights[batch["index"]]
