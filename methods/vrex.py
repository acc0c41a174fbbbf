"""V-REx (Krueger et al., 2021), as DomainBed implements it (domainbed/algorithms.py, VREx):
the mean over environments of the risk, plus `vrex_lambda` times the variance of the
environments' risks (population variance: the mean squared deviation). Before
`vrex_penalty_anneal_iters` steps the penalty weight is 1; at that step the optimiser's
state is reset (DomainBed builds a new Adam there, as for IRM).

Environments are the batch's domains (`batch["domain"]`); the runner gives every batch an
equal share of each training domain (Method.domain_batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.method import domain_indices
from methods.annealed import AnnealedPenalty


class VREx(AnnealedPenalty):
    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        vrex_lambda: float = 10.0,
        vrex_penalty_anneal_iters: int = 500,
    ):
        super().__init__(
            model,
            num_classes,
            num_groups,
            "vrex_lambda",
            vrex_lambda,
            "vrex_penalty_anneal_iters",
            vrex_penalty_anneal_iters,
        )

    def objective(self, logits, y, domains):
        """(mean risk, variance of the environments' risks)."""
        losses = torch.stack([F.cross_entropy(logits[e], y[e]) for e in domain_indices(domains)])
        mean = losses.mean()
        return mean, ((losses - mean) ** 2).mean()
