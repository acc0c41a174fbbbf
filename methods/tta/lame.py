"""LAME (Boudiaf et al. 2022, "Parameter-free Online Test-time Adaptation"): no weight
changes. For each test batch, the class probabilities z_i are the minimiser of a
Laplacian-regularised objective, KL(z_i || p_i) - lambda * sum_j w_ij z_i.z_j, where p is the
model's softmax and w a symmetric k-nearest-neighbour affinity of the L2-normalised
penultimate features; the bound optimisation iterates z_i ∝ p_i exp(lambda sum_j w_ij z_j)
until the energy stops changing. The logits returned are log z (softmax(log z) = z)."""

import torch
import torch.nn.functional as F
from sklearn.neighbors import kneighbors_graph

from harness.tta import TTA


def knn_affinity(features: torch.Tensor, knn: int) -> torch.Tensor:
    """Symmetric 0 / 0.5 / 1 kNN affinity (self excluded), as LAME's kNN kernel."""
    n = len(features)
    if n < 2:
        return torch.zeros(n, n, dtype=features.dtype, device=features.device)
    graph = kneighbors_graph(features.cpu().double().numpy(), n_neighbors=min(knn, n - 1))
    w = torch.as_tensor(graph.toarray(), dtype=features.dtype, device=features.device)
    return (w + w.T) / 2


def laplacian_optimization(
    probs: torch.Tensor, kernel: torch.Tensor, bound_lambda: float, max_steps: int
) -> torch.Tensor:
    # Written here: LAME's bound updates are a few lines and no maintained library has them.
    unary = -torch.log(probs + 1e-10)
    z = probs
    old_energy = float("inf")
    for i in range(max_steps):
        pairwise = bound_lambda * kernel @ z
        z = torch.softmax(-unary + pairwise, dim=1)
        energy = float((unary * z - pairwise * z + z * torch.log(z.clamp_min(1e-20))).sum())
        if i > 1 and abs(energy - old_energy) <= 1e-8 * abs(old_energy):
            break
        old_energy = energy
    return z


class LAME(TTA):
    def __init__(
        self, batch_size: int = 128, knn: int = 5, bound_lambda: float = 1.0, max_steps: int = 100
    ):
        super().__init__(batch_size)
        if not isinstance(knn, int) or knn < 1:
            raise ValueError(f"tta.knn must be a positive integer, got {knn!r}")
        if bound_lambda < 0:
            raise ValueError(f"tta.bound_lambda must be >= 0, got {bound_lambda}")
        self.knn, self.bound_lambda, self.max_steps = knn, bound_lambda, max_steps

    @torch.no_grad()
    def adapt(self, net, batches):
        net.eval()
        logits_all, features_all = [], []
        for x in batches():
            logits, features = net.predict(x)
            kernel = knn_affinity(F.normalize(features.flatten(1).double(), dim=1), self.knn)
            z = laplacian_optimization(
                torch.softmax(logits.double(), dim=1), kernel, self.bound_lambda, self.max_steps
            )
            logits_all.append(torch.log(z.clamp_min(torch.finfo(z.dtype).tiny)).float())
            features_all.append(features)
        return torch.cat(logits_all), torch.cat(features_all)
