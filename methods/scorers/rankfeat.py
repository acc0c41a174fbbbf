"""RankFeat (Song et al., 2022, "RankFeat: Rank-1 Feature Removal for Out-of-distribution
Detection"): the last block's feature map X (C × HW per example) loses its rank-1 part,
X' = X − σ₁u₁v₁ᵀ (exact SVD, torch.linalg.svd), and the energy T·logsumexp(z/T) of the
head's logits on X' is the score (higher = more ID).

A model scorer: it needs the model's feature maps, so it runs its own pass per split during
`harness.run` (harness/forward.py hands it the timm model's forward_features as the
backbone and forward_head, mapped onto the benchmark's labels, as the head) and the
post-hoc stage reads its cached scores. Models without a 4-D feature map (ViTs) or with a
plugin's own forward (CLIP) get no RankFeat scores (a warning; the stage notes the skip).
Not done: the paper's Block-3 + Block-4 fusion and its power-iteration approximation."""

from collections.abc import Callable, Iterable

import numpy as np
import torch

from harness.scorer import Scorer


def remove_rank1(maps: torch.Tensor) -> torch.Tensor:
    """Each (C, H·W) feature matrix minus its leading singular triplet σ₁u₁v₁ᵀ."""
    b, c, h, w = maps.shape
    m = maps.reshape(b, c, h * w).double()
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    rank1 = s[:, :1, None] * (u[:, :, :1] @ vh[:, :1, :])
    return (m - rank1).to(maps.dtype).reshape(b, c, h, w)


class RankFeat(Scorer):
    needs = ("model", "feature_maps")

    def __init__(self, temperature: float = 1.0):
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or temperature <= 0
        ):
            raise ValueError(f"rankfeat temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def score_feature_maps(
        self,
        backbone: Callable[[torch.Tensor], torch.Tensor],
        head: Callable[[torch.Tensor], torch.Tensor],
        batches: Iterable[torch.Tensor],
    ) -> np.ndarray:
        scores = []
        with torch.no_grad():
            for x in batches:
                maps = backbone(x)
                if maps.ndim != 4:
                    raise ValueError(
                        f"rankfeat needs 4-D feature maps (B, C, H, W), got shape {tuple(maps.shape)}"
                    )
                logits = head(remove_rank1(maps)).double() / self.temperature
                scores.append((self.temperature * torch.logsumexp(logits, dim=1)).cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)
