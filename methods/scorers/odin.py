"""ODIN (Liang et al., 2018): temperature-scaled MSP after a small input perturbation that
raises the predicted class's softmax; ID inputs respond more than OOD ones.

The one scorer here that needs the model and input gradients: it runs its own forward and
backward passes during `harness.run` (2 forwards + 1 backward per example), its scores are
cached beside the outputs, and the post-hoc stage reads them from there."""

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from harness.scorer import Scorer


class ODIN(Scorer):
    needs = ("model",)

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014):
        if temperature <= 0 or epsilon < 0:
            raise ValueError(
                f"odin needs temperature > 0 and epsilon >= 0, got {temperature}, {epsilon}"
            )
        self.temperature, self.epsilon = temperature, epsilon

    def score_batches(
        self, logits_fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor]
    ) -> np.ndarray:
        scores = []
        for x in batches:
            x = x.detach().clone().requires_grad_(True)
            log_probs = F.log_softmax(logits_fn(x) / self.temperature, dim=1)
            # -log S_yhat(x; T): its gradient sign points away from the predicted class
            loss = -log_probs.max(dim=1).values.sum()
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                perturbed = x - self.epsilon * grad.sign()
                probs = F.softmax(logits_fn(perturbed) / self.temperature, dim=1)
            scores.append(probs.max(dim=1).values.double().cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)
