"""MixStyle (Zhou et al., 2021, "Domain Generalization with MixStyle"): ERM while, in
training, the feature maps after some early stages of the network get their instance-level
style (per-example, per-channel mean μ and standard deviation σ over the spatial positions)
mixed with another example's:

    MixStyle(x) = γ_mix ⊙ (x − μ(x)) / σ(x) + β_mix,
    γ_mix = λ σ(x) + (1 − λ) σ(x̃),   β_mix = λ μ(x) + (1 − λ) μ(x̃),   λ ~ Beta(α, α)

per example, with σ = sqrt(var + eps), μ and σ cut from the graph (the release's detach),
x̃ the batch permuted, and the whole layer applied with probability `p` per forward pass
(the release's defaults: p = 0.5, α = 0.1, eps = 1e-6).

Partners (`mix`): `random` (the release's default: a random permutation of the batch) or
`crossdomain`: each example takes a random partner from another domain of the batch
(`batch["domain"]`; the release's crossdomain mode assumes a batch of two domain halves; this
draws among all other domains; with a single domain in the batch, a random permutation).

The hook (`layers`): a forward hook on each named submodule of the model
(`model.get_submodule`; timm's ResNets: `layer1` .. `layer4`, the residual stages) replaces
its output. Default [layer1, layer2], the release's `ms_l12` configuration. The hook acts
only inside update() (a flag set for the training forward), so validation passes, the
forward stage and a TTA run's copy see the plain network; best.pt holds the model's weights
only (hooks are not state). Randomness comes from torch's generator, which the runner seeds
per epoch: a resumed run draws the same λ, permutations and coin flips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.method import Method

MIXES = ("random", "crossdomain")


def partners(domains: torch.Tensor | None, n: int, crossdomain: bool) -> torch.Tensor:
    """Index of each example's partner: a permutation, or a random one from another domain."""
    if not crossdomain or domains is None or len(torch.unique(domains)) < 2:
        return torch.randperm(n)
    scores = torch.rand(n, n)
    same = domains.cpu()[:, None] == domains.cpu()[None, :]
    return scores.masked_fill(same, -1.0).argmax(1)


def mix_style(
    x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """The mixed feature map; `lam` one weight per example, `perm` each example's partner."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    sig = (x.var(dim=(2, 3), keepdim=True) + eps).sqrt()
    mu, sig = mu.detach(), sig.detach()
    lam = lam.view(-1, 1, 1, 1).to(x.dtype)
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    return (x - mu) / sig * sig_mix + mu_mix


class MixStyle(Method):
    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        p: float = 0.5,
        alpha: float = 0.1,
        eps: float = 1e-6,
        layers: list[str] | tuple[str, ...] = ("layer1", "layer2"),
        mix: str = "random",
    ):
        super().__init__(model, num_classes, num_groups)
        if not 0 <= p <= 1:
            raise ValueError(f"method.p must be in [0, 1], got {p}")
        if not alpha > 0:
            raise ValueError(f"method.alpha must be > 0, got {alpha}")
        if not eps > 0:
            raise ValueError(f"method.eps must be > 0, got {eps}")
        if mix not in MIXES:
            raise ValueError(f"method.mix must be one of {MIXES}, got {mix!r}")
        if isinstance(layers, str) or not layers:
            raise ValueError(
                f"method.layers must be a non-empty list of module names, got {layers!r}"
            )
        self.p, self.eps, self.crossdomain = float(p), float(eps), mix == "crossdomain"
        self.beta = torch.distributions.Beta(float(alpha), float(alpha))
        self._active, self._domains = False, None
        for name in layers:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                stages = [n for n, _ in model.named_children()]
                raise ValueError(
                    f"method.layers: the model has no submodule {name!r} (its children: {stages})"
                ) from None
            module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if not self._active or output.dim() != 4 or torch.rand(()) >= self.p:
            return None  # None keeps the module's own output
        n = output.shape[0]
        lam = self.beta.sample((n,)).to(output.device)
        perm = partners(self._domains, n, self.crossdomain).to(output.device)
        return mix_style(output, lam, perm, self.eps)

    def update(self, batch):
        self._active, self._domains = True, batch.get("domain")
        try:
            logits, _ = self.predict(batch["x"])
        finally:
            self._active, self._domains = False, None
        loss = F.cross_entropy(logits, batch["y"])
        self.step(loss)
        return {"loss": loss.item()}
