"""APS, adaptive prediction sets (Romano et al., 2020): s(x, y) = the probability mass of the
classes ranked above y plus u * p_y(x) (randomized, u ~ U(0, 1) per example, exact coverage
in expectation) or plus p_y(x) (randomized: false, conservative). Sets grow with the
model's uncertainty."""

import numpy as np

from harness.conformal import ConformalScore, cumulative_mass


class APS(ConformalScore):
    def __init__(self, randomized: bool = True) -> None:
        if not isinstance(randomized, bool):
            raise ValueError(f"randomized must be true or false, got {randomized!r}")
        self.randomized = randomized

    def scores(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        return cumulative_mass(probs, u)[0]
