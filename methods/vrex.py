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

from harness.method import Method, domain_indices


class VREx(Method):
    domain_batches = True

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
            vrex_lambda=vrex_lambda,
            vrex_penalty_anneal_iters=vrex_penalty_anneal_iters,
        )
        if not vrex_lambda >= 0:
            raise ValueError(f"method.vrex_lambda must be >= 0, got {vrex_lambda}")
        if not isinstance(vrex_penalty_anneal_iters, int) or vrex_penalty_anneal_iters < 0:
            raise ValueError(
                "method.vrex_penalty_anneal_iters must be an integer >= 0, got "
                f"{vrex_penalty_anneal_iters!r}"
            )
        self.vrex_lambda, self.anneal_iters = float(vrex_lambda), vrex_penalty_anneal_iters
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))  # resumes

    def objective(self, logits, y, domains):
        """(mean risk, variance of the environments' risks)."""
        losses = torch.stack([F.cross_entropy(logits[e], y[e]) for e in domain_indices(domains)])
        mean = losses.mean()
        return mean, ((losses - mean) ** 2).mean()

    def update(self, batch):
        count = int(self.update_count)
        weight = self.vrex_lambda if count >= self.anneal_iters else 1.0
        logits, _ = self.predict(batch["x"])
        mean, penalty = self.objective(logits, batch["y"], batch["domain"])
        loss = mean + weight * penalty
        if count == self.anneal_iters and self.anneal_iters > 0 and self.optimizer is not None:
            self.optimizer.state.clear()  # DomainBed's fresh Adam at the jump in the weight
        self.step(loss)
        self.update_count += 1
        return {"loss": loss.item(), "nll": mean.item(), "penalty": penalty.item()}
