"""Vector scaling (Guo et al., 2017): calibrated logits w ⊙ z + b, one weight and one bias
per class, fitted by NLL on ID validation data. Temperature scaling is the special case
w = 1/T, b = 0, so its fitted NLL is never worse; unlike it, predictions can change."""

from harness.calibrator import Calibrator, fit_affine


class VectorScaling(Calibrator):
    diagonal = True  # one weight per class; MatrixScaling (matrix.py) fits the full matrix

    def __init__(self, max_iter: int = 2000) -> None:
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        self.max_iter = max_iter

    def fit(self, logits, labels):
        self.weight, self.bias, self.converged = fit_affine(
            logits, labels, diagonal=self.diagonal, max_iter=self.max_iter
        )

    def transform(self, logits):
        if self.diagonal:
            return logits * self.weight + self.bias
        return logits @ self.weight.T + self.bias

    def params(self):
        # 2K numbers are too many for rows: their mean, and L-BFGS's success flag
        return {"weight_mean": float(self.weight.mean()), "converged": float(self.converged)}
