"""MC dropout (Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation"): `passes`
stochastic forward passes with dropout on, the predictive distribution being the mean of
their softmax. The score is, by `score`: `msp` (the mean softmax's largest probability,
default), `entropy` (its negative entropy) or `mutual_information` (minus the BALD
quantity, entropy of the mean minus mean entropy); higher = more confident.

A model scorer (needs the model; it runs its own passes during `harness.run`, like ODIN).
Dropout is switched on by putting every dropout module in training mode and setting the
model's own `training` flag (timm's head dropout `drop_rate` and methods/large_dropout.py
read that flag), while every other module -- batch norm above all -- stays in eval mode.
The passes draw from a fixed seed (`seed`) in a forked RNG, so scores are reproducible and
the run's RNG is untouched. A model without dropout gives `passes` identical passes (the
scores are then MSP's; a warning says so)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from harness.scorer import Scorer

log = logging.getLogger("harness.scorers.mc_dropout")
SCORES = ("msp", "entropy", "mutual_information")


def dropout_on(model: nn.Module) -> int:
    """Dropout modules to training mode and the model's own flag on; the number of dropout
    modules found."""
    found = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
            found += 1
    model.training = True  # only the top-level flag: its children keep their own mode
    return found


def mc_scores(probs: torch.Tensor, score: str) -> np.ndarray:
    """probs: K × N × C softmax of the passes -> N scores (higher = more confident)."""
    p = probs.double()
    mean = p.mean(0)
    entropy = -(mean * torch.log(mean.clamp_min(1e-300))).sum(1)
    if score == "msp":
        out = mean.max(1).values
    elif score == "entropy":
        out = -entropy
    else:
        expected = -(p * torch.log(p.clamp_min(1e-300))).sum(2).mean(0)
        out = -(entropy - expected).clamp_min(0)
    return out.cpu().numpy()


class MCDropout(Scorer):
    needs = ("model",)
    uses_model = True  # harness/forward.py hands it the model (to switch dropout on)

    def __init__(self, passes: int = 10, score: str = "msp", seed: int = 0):
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 2:
            raise ValueError(f"mc_dropout.passes must be an integer >= 2, got {passes!r}")
        if score not in SCORES:
            raise ValueError(f"mc_dropout.score must be one of {SCORES}, got {score!r}")
        self.passes, self.score_name, self.seed = passes, score, int(seed)
        self.model: nn.Module | None = None

    def score_batches(
        self, logits_fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor]
    ) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("mc_dropout needs the model (harness/forward.py hands it over)")
        scores = []
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(self.seed)
            if dropout_on(self.model) == 0 and not getattr(self.model, "drop_rate", 0):
                log.warning("mc_dropout: no dropout module in the model; passes are identical "
                            "unless the method's predict applies dropout itself")  # fmt: skip
            try:
                for x in batches:
                    probs = torch.stack(
                        [torch.softmax(logits_fn(x).float(), 1) for _ in range(self.passes)]
                    )
                    scores.append(mc_scores(probs, self.score_name))
            finally:
                self.model.eval()
        return np.concatenate(scores) if scores else np.zeros(0)
