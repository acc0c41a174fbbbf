"""The post-hoc scorer interface. A scorer turns cached Outputs into one score per example,
higher = more in-distribution / more trustworthy. It declares what it needs from the cache;
it never runs the model (scorers that must, such as ODIN, say so with needs = ("model",)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.outputs import Head, Outputs


@dataclass
class FitData:
    """What a scorer may fit on: ID outputs (subsampled), the head if it is usable."""

    train: Outputs
    val: Outputs | None
    head: Head | None
    num_classes: int


class Scorer:
    """Base class of methods/scorers/. Hyperparameters arrive as keyword arguments."""

    # any of: logits, features, head, model, stage_features (per-stage pooled features,
    # Outputs.stages: recorded by the forward pass only when a scorer asks), members (an ensemble's member logits,
    # Outputs.members; skipped with a note for single models); nonnegative_features: the method assumes
    # post-ReLU features (ReAct, ASH, SCALE) and is skipped, with a note, where the ID
    # features take negative values (CLIP's normalised embeddings, ViTs)
    needs: ClassVar[tuple[str, ...]] = ("logits",)
    # the fewest training examples (eval.fit_size) its fit is defined for; fewer is refused
    # by the eval config's validation, naming the key (a covariance of one example gave a
    # Mahalanobis AUROC of exactly 0.5 without a word)
    min_fit_size: ClassVar[int] = 1

    def fit(self, data: FitData) -> None:
        """Fit on ID outputs; the default needs nothing."""

    def score(self, outputs: Outputs) -> np.ndarray:
        raise NotImplementedError


def check_finite(name: str, scores: np.ndarray) -> np.ndarray:
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum())
        raise ValueError(f"scorer {name!r} produced {bad} non-finite scores")
    return scores


def inapplicable(scorer: Scorer, data: FitData, head_note: str) -> str | None:
    """Why the scorer cannot run on this cache (a note), or None."""
    if "head" in scorer.needs and data.head is None:
        return head_note
    if "features" in scorer.needs and data.train is not None and data.train.features.shape[1] == 0:
        return "no features cached: the model gives logits only"
    if "stage_features" in scorer.needs and data.train is not None and data.train.stages is None:
        return (
            "no per-stage features cached: harness.run records them in its forward pass when "
            "a scorer of its eval config needs them (eval=openood_full); a run finished under "
            "another eval config, a TTA, probe, ensemble or imported run, or a model without "
            "timm's feature_info has none"
        )
    if "members" in scorer.needs and (data.train is None or data.train.members is None):
        return (
            "needs the members' predictions of an ensemble (ensemble=seeds); this run is a "
            "single model, or an ensemble cached before they were kept"
        )
    if "nonnegative_features" in scorer.needs and data.train is not None:
        low = float(data.train.features.min(initial=0.0))
        if low < 0:
            return (
                "assumes non-negative (post-ReLU) features; this model's ID features go down "
                f"to {low:.3g}"
            )
    return None
