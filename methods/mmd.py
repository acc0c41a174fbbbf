"""MMD (Li et al., 2018, "Domain Generalization with Adversarial Feature Learning", its
kernel-MMD alignment term) as DomainBed implements it (domainbed/algorithms.py: MMD =
AbstractMMD with gaussian=True): the mean over environments of the risk, plus `mmd_gamma`
times the mean over every pair of environments (i, j) of

    MMD²(i, j) = mean K(x_i, x_i') + mean K(x_j, x_j') − 2 mean K(x_i, x_j),
    K(a, b) = Σ_γ exp(−γ ‖a − b‖²),  γ ∈ {0.001, 0.01, 0.1, 1, 10, 100, 1000},

over the environments' penultimate features in the batch: the biased (V-statistic) estimate,
the kernel matrices' diagonals included, with a sum of seven Gaussian kernels of fixed
bandwidths (no median heuristic), as DomainBed computes it. The squared distances are
clamped below at 1e-30 (DomainBed's `my_cdist`).

Same loop as CORAL (methods/coral.py): environments are the batch's domains
(domain-balanced batches); here an environment of one example still joins the pairs.
"""

from __future__ import annotations

import torch

from methods.coral import CORAL

GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # DomainBed's fixed bandwidths


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, gammas=GAMMAS) -> torch.Tensor:
    """Σ_γ exp(−γ ‖x_a − y_b‖²) for every pair of rows (a of x, b of y)."""
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2 * (x @ y.t())
    sq = sq.clamp_min(1e-30)
    return sum(torch.exp(-g * sq) for g in gammas)


def mmd_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DomainBed's AbstractMMD.mmd with gaussian=True."""
    return (
        gaussian_kernel(x, x).mean()
        + gaussian_kernel(y, y).mean()
        - 2 * gaussian_kernel(x, y).mean()
    )


class MMD(CORAL):
    distance = staticmethod(mmd_distance)
    min_pair_size = 1
