"""FixMatch (Sohn et al., 2020, "FixMatch: Simplifying Semi-Supervised Learning with
Consistency and Confidence") on unlabeled target batches (trainer.unlabeled_split, required),
in WILDS 2.0's form (examples/algorithms/fixmatch.py). Per update, with the labeled batch x
and `mu` × trainer.batch_size unlabeled inputs u, each seen in a weak view α(u) and a
strong view A(u):

    p_i  = softmax f(α(u_i))                      (a pass without gradient, training mode)
    loss = CE(f(x), y) + lambda_u · mean_i [ 1{max p_i ≥ tau} · CE(f(A(u_i)), argmax p_i) ]

the mean over every unlabeled input (unconfident ones count as zero), x and A(u) in one
forward pass (as WILDS).

The views are made by the runner, not here (Method.unlabeled_views, harness/unlabeled.py):
each is a torchvision augmentation of the raw image (conf/augment/'s kinds) followed by the
run's evaluation transform, seeded per (run seed, epoch, example index, view): the view's
stream number is STREAM_OFFSET + 1 for `strong` and + 2 for `weak` (their sorted order), so
the two views of one input are drawn independently, a rerun or a resumed run draws the same
ones, and loader workers change nothing. Defaults: weak = flip + pad-and-crop (4 pixels;
FixMatch's translate by up to 12.5% of a 32-pixel image), strong = the same plus torchvision's
RandAugment (2 operations, magnitude 10). Both are checked against the benchmark's
refusals before anything is written: on digits (hflip refused) set method.weak.flip=false
and method.strong.flip=false; rotated_digits refuses RandAugment's geometric operations.

Differences from the paper: FixMatch's RandAugment draws a random magnitude per operation
from its own list of 14 operations and adds Cutout; torchvision's RandAugment uses a fixed
magnitude and has no Cutout; the pad-crop pads with zeros, not by reflection. The labeled
batch gets the run's training transform (augment=; the paper's weak augmentation is
augment=flip_crop). The paper's EMA of the weights for evaluation is not done.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from harness.method import Method
from harness.unlabeled import check_views

WEAK = {"name": "flip_crop", "crop": "pad", "padding": 4, "flip": True}
STRONG = {"name": "randaugment", "crop": "pad", "padding": 4, "flip": True,
          "num_ops": 2, "magnitude": 10}  # fmt: skip


class FixMatch(Method):
    def __init__(
        self,
        model,
        num_classes,
        num_groups=1,
        mu: int = 7,
        tau: float = 0.95,
        lambda_u: float = 1.0,
        weak: dict[str, Any] | None = None,
        strong: dict[str, Any] | None = None,
    ):
        super().__init__(model, num_classes, num_groups)
        if isinstance(mu, bool) or not isinstance(mu, int) or mu < 1:
            raise ValueError(f"method.mu must be an integer >= 1, got {mu!r}")
        if not 0 <= tau <= 1:
            raise ValueError(f"method.tau must be in [0, 1], got {tau}")
        if not lambda_u >= 0:
            raise ValueError(f"method.lambda_u must be >= 0, got {lambda_u}")
        self.tau, self.lambda_u = float(tau), float(lambda_u)
        self.unlabeled_options = {"mu": mu, "weak": weak, "strong": strong}
        check_views(self.unlabeled_views(self.unlabeled_options))  # names method.weak/strong

    @classmethod
    def uses_unlabeled(cls, options):
        return True

    @classmethod
    def unlabeled_views(cls, options):
        return {"weak": dict(options.get("weak") or WEAK),
                "strong": dict(options.get("strong") or STRONG)}  # fmt: skip

    @classmethod
    def unlabeled_ratio(cls, options):
        return int(options.get("mu", 7))

    def pseudo_labels(self, weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(argmax, confident mask) of the weak view's softmax, from a pass without gradient."""
        with torch.no_grad():
            probs = F.softmax(self.predict(weak)[0].float(), dim=1)
            confidence, labels = probs.max(dim=1)
        return labels, confidence >= self.tau

    def update(self, batch):
        labels, mask = self.pseudo_labels(batch["unlabeled_weak"])
        n = len(batch["x"])
        logits = self.predict(torch.cat([batch["x"], batch["unlabeled_strong"]]))[0]
        classification = F.cross_entropy(logits[:n], batch["y"])
        per_example = F.cross_entropy(logits[n:], labels, reduction="none")
        consistency = (per_example * mask).mean()
        self.step(classification + self.lambda_u * consistency)
        return {
            "loss": classification.item(),
            "unlabeled_loss": consistency.item(),
            "kept_fraction": mask.float().mean().item(),
        }
