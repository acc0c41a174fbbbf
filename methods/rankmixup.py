"""RankMixup (Noh et al. 2023, "RankMixup: Ranking-Based Mixup Training for Network
Calibration"), its mixup ranking loss (MRL): cross-entropy on the raw examples, plus a hinge
that asks each mixed example to score below its raw counterpart by `margin`,
relu(s(mix_i) - s(x_i) + margin), with s the top logit (`compare: logit`, as the authors'
code) or the top softmax probability (`compare: probability`, as the paper's text). Pairs of
an example with itself are left out. The mixed examples carry no label loss."""

import torch
import torch.nn.functional as F

from harness.method import Method

COMPARE = ("logit", "probability")


class RankMixup(Method):
    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        alpha: float = 1.0,
        margin: float = 0.1,
        ranking_weight: float = 0.1,
        compare: str = "logit",
    ):
        super().__init__(
            model,
            num_classes,
            num_groups,
            alpha=alpha,
            margin=margin,
            ranking_weight=ranking_weight,
            compare=compare,
        )
        if alpha <= 0:
            raise ValueError(f"method.alpha must be > 0, got {alpha}")
        if ranking_weight < 0:
            raise ValueError(f"method.ranking_weight must be >= 0, got {ranking_weight}")
        if compare not in COMPARE:
            raise ValueError(f"method.compare must be one of {COMPARE}, got {compare!r}")
        self.alpha, self.margin = alpha, margin
        self.ranking_weight, self.compare = ranking_weight, compare

    def top_score(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits if self.compare == "logit" else logits.softmax(1)).max(1).values

    def update(self, batch):
        x, y = batch["x"], batch["y"]
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        perm = torch.randperm(len(y), device=y.device)
        logits, _ = self.predict(torch.cat([x, lam * x + (1 - lam) * x[perm]]))
        raw, mixed = logits[: len(y)], logits[len(y) :]
        ce = F.cross_entropy(raw, y)
        hinge = F.relu(self.top_score(mixed) - self.top_score(raw) + self.margin)
        ranking = (hinge * (perm != torch.arange(len(y), device=y.device))).mean()
        loss = ce + self.ranking_weight * ranking
        self.step(loss)
        return {"loss": loss.item(), "ce": ce.item(), "ranking": ranking.item()}
