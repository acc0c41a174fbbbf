"""Energy score: T * logsumexp(logits / T) (Liu et al., 2020); higher = more ID."""

from scipy.special import logsumexp

from harness.scorer import Scorer


def energy(logits, temperature: float = 1.0):
    return temperature * logsumexp(logits.astype("float64") / temperature, axis=1)


class Energy(Scorer):
    def __init__(self, temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"energy temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def score(self, outputs):
        return energy(outputs.logits, self.temperature)
