"""RAPS, regularized adaptive prediction sets (Angelopoulos et al., 2021): APS's score plus
lam * max(0, o(y) - k_reg), o(y) the 1-based rank of y by decreasing probability, which
penalises the long tail of unlikely classes and so shrinks the sets. The paper picks k_reg
and lam on a further held-out part; here they are fixed options (k_reg 5, lam 0.01 by
default, within the ranges the paper searches)."""

import numpy as np

from harness.conformal import ConformalScore, cumulative_mass


class RAPS(ConformalScore):
    def __init__(self, k_reg: int = 5, lam: float = 0.01, randomized: bool = True) -> None:
        if isinstance(k_reg, bool) or not isinstance(k_reg, int) or k_reg < 0:
            raise ValueError(f"k_reg must be a non-negative integer, got {k_reg!r}")
        if isinstance(lam, bool) or not isinstance(lam, int | float) or lam < 0:
            raise ValueError(f"lam must be a non-negative number, got {lam!r}")
        if not isinstance(randomized, bool):
            raise ValueError(f"randomized must be true or false, got {randomized!r}")
        self.k_reg, self.lam, self.randomized = k_reg, float(lam), randomized

    def scores(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        mass, rank = cumulative_mass(probs, u)
        return mass + self.lam * np.maximum(0, rank - self.k_reg)
