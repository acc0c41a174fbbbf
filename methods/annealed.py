"""What IRM and V-REx share, as DomainBed implements both: the loss is the environments'
mean risk plus a penalty whose weight is 1 until `anneal_iters` updates, then `lam`; at that
step the optimiser's state is reset (DomainBed builds a fresh Adam there, "because it
doesn't like the sharp jump in gradient magnitudes"). A subclass gives `objective(logits, y,
domains) -> (risk, penalty)` and names its two options (DomainBed's hyperparameter names).
Not a plugin itself: no YAML selects it."""

from __future__ import annotations

import torch

from harness.method import Method


class AnnealedPenalty(Method):
    domain_batches = True

    def __init__(self, model, num_classes, num_groups, lam_name: str, lam: float,
                 anneal_name: str, anneal_iters: int):  # fmt: skip
        super().__init__(
            model, num_classes, num_groups, **{lam_name: lam, anneal_name: anneal_iters}
        )
        if not lam >= 0:
            raise ValueError(f"method.{lam_name} must be >= 0, got {lam}")
        if not isinstance(anneal_iters, int) or anneal_iters < 0:
            raise ValueError(f"method.{anneal_name} must be an integer >= 0, got {anneal_iters!r}")
        self.lam, self.anneal_iters = float(lam), anneal_iters
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))  # resumes

    def objective(self, logits, y, domains):
        raise NotImplementedError

    def update(self, batch):
        count = int(self.update_count)
        weight = self.lam if count >= self.anneal_iters else 1.0
        logits, _ = self.predict(batch["x"])
        risk, penalty = self.objective(logits, batch["y"], batch["domain"])
        loss = risk + weight * penalty
        if count == self.anneal_iters and self.anneal_iters > 0 and self.optimizer is not None:
            self.optimizer.state.clear()  # DomainBed's fresh Adam at the jump in the weight
        self.step(loss)
        self.update_count += 1
        return {"loss": loss.item(), "nll": risk.item(), "penalty": penalty.item()}
