"""LAC, least ambiguous set-valued classifier (Sadinle et al., 2019): s(x, y) = 1 - p_y(x),
so the set is {y : p_y(x) >= 1 - q}; the smallest sets on average, possibly empty, and
coverage uneven across easy and hard examples."""

import numpy as np

from harness.conformal import ConformalScore


class LAC(ConformalScore):
    def scores(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        return 1.0 - probs
