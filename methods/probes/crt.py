"""Classifier re-training (cRT; Kang et al. 2020, "Decoupling Representation and Classifier
for Long-Tailed Recognition"), as SubpopBench's CRT: the backbone stays as stage 1 (an ERM
run) left it, and only the linear classifier is trained further, from stage 1's own head,
with class-balanced sampling of the training split (each batch draws examples with
probability ∝ 1 / n_class, with replacement) and SubpopBench's SGD (momentum 0.9, its lr and
weight decay). Here it is a derived run on the backbone run's cached train features
(harness/probe.py): no forward pass, no augmentation (the cached features are those of the
evaluation transform, where SubpopBench's stage 2 sees its training transform).

SubpopBench balances groups when the training attributes are known and classes otherwise;
this probe balances classes only (it is not handed the training groups)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.outputs import Head, Outputs


def class_balanced_batches(
    labels: np.ndarray, batch_size: int, steps: int, generator: torch.Generator
) -> torch.Tensor:
    """steps × batch_size training indices, each drawn with probability ∝ 1 / n_label."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)
    draws = torch.multinomial(weights, steps * batch_size, replacement=True, generator=generator)
    return draws.view(steps, batch_size)


class CRT:
    def __init__(
        self,
        steps: int = 1000,
        batch_size: int = 108,
        lr: float = 0.001,
        momentum: float = 0.9,
        weight_decay: float = 0.0001,
        seed: int = 0,
    ) -> None:
        for name, value in (("steps", steps), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"probe.{name} must be a positive integer, got {value!r}")
        if not lr > 0:
            raise ValueError(f"probe.lr must be > 0, got {lr}")
        if not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(
                f"probe.momentum must be in [0, 1) and probe.weight_decay >= 0, got "
                f"{momentum}, {weight_decay}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"probe.seed must be a non-negative integer, got {seed!r}")
        self.steps, self.batch_size, self.lr = steps, batch_size, float(lr)
        self.momentum, self.weight_decay, self.seed = float(momentum), float(weight_decay), seed

    def fit(
        self, train: Outputs, val: Outputs | None, num_classes: int, base: Head | None
    ) -> tuple[Head, dict[str, Any]]:
        x = torch.as_tensor(train.features, dtype=torch.float32)
        y = torch.as_tensor(train.labels, dtype=torch.int64)
        missing = sorted(set(range(num_classes)) - set(train.labels.tolist()))
        if missing:
            raise ValueError(
                f"probe=crt: the train split has no example of classes {missing}; class-balanced "
                "sampling cannot draw them"
            )
        head = torch.nn.Linear(x.shape[1], num_classes)
        with torch.no_grad():  # stage 1's classifier, trained further (SubpopBench's CRT)
            if base is not None:
                head.weight.copy_(torch.as_tensor(base.weight))
                head.bias.copy_(torch.as_tensor(base.bias))
            else:
                head.weight.zero_()
                head.bias.zero_()
        opt = torch.optim.SGD(
            head.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        generator = torch.Generator().manual_seed(self.seed)
        batches = class_balanced_batches(train.labels, self.batch_size, self.steps, generator)
        for rows in batches:
            loss = F.cross_entropy(head(x[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        out = Head(head.weight.detach().double().numpy(), head.bias.detach().double().numpy())
        info = {
            "steps": self.steps,
            "from_stage1_head": base is not None,
            "last_loss": float(loss.detach()),
        }
        return out, info
