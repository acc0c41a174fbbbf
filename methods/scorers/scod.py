"""A plug-in reject rule for selective classification with OOD detection (SCOD), after
Narasimhan et al., "Plugin estimators for selective classification with out-of-distribution
detection" (ICLR 2024).

Their Bayes-optimal rule, for costs c_in (rejecting an ID example) and c_out (accepting an
OOD one), rejects x when
    (1 - c_in - c_out) * (1 - max_y P_in(y|x)) + c_out * P_out(x) / P_in(x) > c_in.
This plug-in takes max_y P_in(y|x) from the softmax and the density ratio from a black-box
OOD scorer: with z(x) the OOD score standardised on ID training data, P_out/P_in is
estimated as exp(-scale * z(x)) (a logistic link; without OOD data its scale cannot be
fitted, so it is a hyperparameter). The score (higher = accept) is minus the left side;
c_in only moves the threshold, which the metrics sweep.
"""

import numpy as np

from harness import metrics, registry
from harness.scorer import Scorer


class SCOD(Scorer):
    def __init__(self, ood_scorer: dict, c_in: float = 0.1, c_out: float = 0.5, scale: float = 1.0):
        if not (0 <= c_in and 0 <= c_out and c_in + c_out < 1):
            raise ValueError(
                f"scod needs c_in, c_out >= 0 and c_in + c_out < 1, got {c_in}, {c_out}"
            )
        cls = registry.resolve_target("scorer", {"name": "scod.ood_scorer", **ood_scorer})
        if "model" in cls.needs:
            raise ValueError(
                "scod's ood_scorer must run from the cache (not one that needs the model)"
            )
        self.inner = registry.construct(cls, ood_scorer)
        self.needs = tuple(sorted({"logits", *cls.needs}))
        self.c_in, self.c_out, self.scale = c_in, c_out, scale

    def fit(self, data):
        self.inner.fit(data)
        train_scores = self.inner.score(data.train)
        self.mean, self.std = float(train_scores.mean()), float(train_scores.std()) or 1.0

    def score(self, outputs):
        z = (self.inner.score(outputs) - self.mean) / self.std
        ratio = np.exp(-self.scale * np.clip(z, -50, 50))
        risk = (1 - self.c_in - self.c_out) * (1 - metrics.msp(outputs.logits))
        return -(risk + self.c_out * ratio)
