"""IRM (Arjovsky et al., 2019), as DomainBed implements it (domainbed/algorithms.py, IRM):
the mean over environments of the risk, plus `irm_lambda` times the IRMv1 penalty, the
squared gradient of each environment's risk with respect to a scalar multiplier w of the
logits at w = 1, averaged over environments. DomainBed estimates the square without bias
as the product of the gradients on the two halves of the environment's batch (even and odd
positions); so does this. Before `irm_penalty_anneal_iters` steps the penalty weight is 1;
at that step the optimiser's state is reset (DomainBed builds a new Adam there, "because it
doesn't like the sharp jump in gradient magnitudes").

Environments are the batch's domains (`batch["domain"]`); the runner gives every batch an
equal share of each training domain (Method.domain_batches). An environment with fewer
than two examples in a batch adds to the risk but not to the penalty (no two halves).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import autograd

from harness.method import domain_indices
from methods.annealed import AnnealedPenalty


def irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DomainBed's _irm_penalty: grad_w CE(w·logits[::2]) · grad_w CE(w·logits[1::2]) at w=1."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # not in half precision
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    loss_1 = F.cross_entropy(logits[::2] * scale, y[::2])
    loss_2 = F.cross_entropy(logits[1::2] * scale, y[1::2])
    grad_1 = autograd.grad(loss_1, [scale], create_graph=True)[0]
    grad_2 = autograd.grad(loss_2, [scale], create_graph=True)[0]
    return torch.sum(grad_1 * grad_2)


class IRM(AnnealedPenalty):
    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        irm_lambda: float = 100.0,
        irm_penalty_anneal_iters: int = 500,
    ):
        super().__init__(
            model,
            num_classes,
            num_groups,
            "irm_lambda",
            irm_lambda,
            "irm_penalty_anneal_iters",
            irm_penalty_anneal_iters,
        )

    def objective(self, logits, y, domains):
        """(risk, penalty): the means over the batch's environments."""
        envs = domain_indices(domains)
        nll = torch.stack([F.cross_entropy(logits[e], y[e]) for e in envs]).mean()
        pairs = [irm_penalty(logits[e], y[e]) for e in envs if len(e) >= 2]
        penalty = torch.stack(pairs).mean() if pairs else nll.new_zeros(())
        return nll, penalty
