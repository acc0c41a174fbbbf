"""Deep CORAL (Sun & Saenko, 2016) as DomainBed implements it for domain generalisation
(domainbed/algorithms.py: CORAL = AbstractMMD with gaussian=False): the mean over
environments of the risk, plus `mmd_gamma` times the mean over every pair of environments
of mean((μ_i − μ_j)²) + mean((C_i − C_j)²), with μ the features' mean and C their
covariance (denominator n − 1) in the environment's part of the batch. That is DomainBed's
variant: squared differences of both means and covariances, averaged over the entries
(not the original paper's squared Frobenius norm / 4d² of covariances alone).

Features are the model's penultimate features (`predict`'s second output). Environments are
the batch's domains (`batch["domain"]`, domain-balanced batches: Method.domain_batches). An
environment with fewer than two examples in a batch has no covariance: it adds to the risk
but to no pair.

Unlabeled form (`unlabeled: true`, conf/method/coral_unlabeled.yaml; WILDS 2.0's DeepCORAL
with unlabeled data): the batch of unlabeled target inputs (`batch["unlabeled_x"]`,
trainer.unlabeled_split) goes through the model in one forward pass with the labeled batch
(as WILDS concatenates them: batch-norm statistics see both) and its features join the
penalty as one more environment, paired with every training environment; the risk stays the
labeled environments' alone. The target's labels never reach the method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.method import Method, domain_indices


def coral_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DomainBed's AbstractMMD.mmd with gaussian=False."""
    mean_x, mean_y = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    cent_x, cent_y = x - mean_x, y - mean_y
    cova_x = (cent_x.t() @ cent_x) / (len(x) - 1)
    cova_y = (cent_y.t() @ cent_y) / (len(y) - 1)
    return (mean_x - mean_y).pow(2).mean() + (cova_x - cova_y).pow(2).mean()


class CORAL(Method):
    domain_batches = True
    # the distance between two environments' features, and the fewest examples an
    # environment needs to join a pair (a covariance needs two); MMD swaps both
    distance = staticmethod(coral_distance)
    min_pair_size = 2

    def __init__(
        self, model, num_classes, num_groups=1, mmd_gamma: float = 1.0, unlabeled: bool = False
    ):
        super().__init__(model, num_classes, num_groups, mmd_gamma=mmd_gamma)
        if not mmd_gamma >= 0:
            raise ValueError(f"method.mmd_gamma must be >= 0, got {mmd_gamma}")
        if not isinstance(unlabeled, bool):
            raise ValueError(f"method.unlabeled must be true or false, got {unlabeled!r}")
        self.mmd_gamma, self.unlabeled = float(mmd_gamma), unlabeled

    @classmethod
    def uses_unlabeled(cls, options):
        return bool(options.get("unlabeled", False))

    def objective(self, logits, features, y, domains, target=None):
        """(mean risk over environments, mean distance over pairs of environments); `target`:
        the unlabeled target's features, one more environment of the penalty only."""
        envs = domain_indices(domains)
        risk = torch.stack([F.cross_entropy(logits[e], y[e]) for e in envs]).mean()
        features = features.to(torch.promote_types(features.dtype, torch.float32))
        feats = [features[e] for e in envs if len(e) >= self.min_pair_size]
        if target is not None and len(target) >= self.min_pair_size:
            feats.append(target.to(features.dtype))
        pairs = [
            self.distance(feats[i], feats[j])
            for i in range(len(feats))
            for j in range(i + 1, len(feats))
        ]
        penalty = torch.stack(pairs).mean() if pairs else risk.new_zeros(())
        return risk, penalty

    def update(self, batch):
        if not self.unlabeled:
            logits, features = self.predict(batch["x"])
            risk, penalty = self.objective(logits, features, batch["y"], batch["domain"])
        else:  # one forward pass over labeled and unlabeled inputs, as WILDS
            n = len(batch["x"])
            logits, features = self.predict(torch.cat([batch["x"], batch["unlabeled_x"]]))
            risk, penalty = self.objective(
                logits[:n], features[:n], batch["y"], batch["domain"], target=features[n:]
            )
        self.step(risk + self.mmd_gamma * penalty)
        # DomainBed reports the classification objective as `loss`, the penalty beside it
        return {"loss": risk.item(), "penalty": penalty.item()}
