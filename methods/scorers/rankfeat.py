"""RankFeat (Song et al., 2022, "RankFeat: Rank-1 Feature Removal for Out-of-distribution
Detection"): the last block's feature map X (C × HW per example) loses its rank-1 part,
X' = X − σ₁u₁v₁ᵀ (exact SVD, torch.linalg.svd), and the energy T·logsumexp(z/T) of the
head's logits on X' is the score (higher = more ID).

A model scorer: it needs the model's feature maps, so it runs its own pass per split during
`harness.run` (harness/forward.py hands it the timm model's forward_features as the
backbone and forward_head, mapped onto the benchmark's labels, as the head) and the
post-hoc stage reads its cached scores. Models without a 4-D feature map (ViTs) or with a
plugin's own forward (CLIP) get no RankFeat scores (a warning; the stage notes the skip).

fuse_block3=true is the paper's best variant (Block 3 + Block 4, as its code does it): the
third block's map also loses its rank-1 part and goes on through the last stage and the
head; the two logit vectors are averaged before the energy. Block 3 is timm's
forward_intermediates at the second-to-last entry of feature_info, the last stage the module
feature_info names last; a model whose last stage applied to block 3 does not give
forward_features on the first batch (a norm or pooling between them) is refused with a
warning. Not done: the power-iteration approximation of the SVD."""

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

    def __init__(self, temperature: float = 1.0, fuse_block3: bool = False):
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or temperature <= 0
        ):
            raise ValueError(f"rankfeat temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        if not isinstance(fuse_block3, bool):
            raise ValueError(f"rankfeat fuse_block3 must be true or false, got {fuse_block3!r}")
        self.fuse_block3 = fuse_block3
        # harness/forward.py hands the model to scorers that ask: the fusion needs its stages
        self.uses_model = fuse_block3
        self.model: torch.nn.Module | None = None

    def score_feature_maps(
        self,
        backbone: Callable[[torch.Tensor], torch.Tensor],
        head: Callable[[torch.Tensor], torch.Tensor],
        batches: Iterable[torch.Tensor],
    ) -> np.ndarray:
        block3, tail = timm_block3(self.model) if self.fuse_block3 else (None, None)
        scores = []
        with torch.no_grad():
            for x in batches:
                maps = backbone(x)
                if maps.ndim != 4:
                    raise ValueError(
                        f"rankfeat needs 4-D feature maps (B, C, H, W), got shape {tuple(maps.shape)}"
                    )
                logits = head(remove_rank1(maps)).double()
                if block3 is not None:
                    maps3 = block3(x)
                    if not scores and not torch.allclose(tail(maps3), maps, rtol=1e-4, atol=1e-4):
                        raise ValueError(
                            "fuse_block3: the last stage applied to block 3 does not give "
                            "forward_features for this model"
                        )
                    logits = (logits + head(tail(remove_rank1(maps3))).double()) / 2
                logits = logits / self.temperature
                scores.append((self.temperature * torch.logsumexp(logits, dim=1)).cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)


def timm_block3(
    model: torch.nn.Module | None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(input -> block 3's map, block-3 map -> block 4's map) of a timm model: timm's
    forward_intermediates and the module its feature_info names last."""
    info = getattr(model, "feature_info", None)
    if model is None or not isinstance(info, list) or len(info) < 2:
        raise ValueError("fuse_block3 needs a timm model with feature_info stages")
    if not hasattr(model, "forward_intermediates"):
        raise ValueError("fuse_block3 needs timm's forward_intermediates")
    last = model.get_submodule(info[-1]["module"])
    index = len(info) - 2

    def block3(x: torch.Tensor) -> torch.Tensor:
        return model.forward_intermediates(
            x, indices=[index], intermediates_only=True, stop_early=True
        )[0]

    return block3, last
