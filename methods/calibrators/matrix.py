"""Matrix scaling (Guo et al., 2017): calibrated logits W z + b with a full K×K matrix,
fitted by NLL on ID validation data — multinomial logistic regression on the logits,
without a penalty. K(K+1) parameters: it overfits a small val set or many classes (Guo et
al.: poor with hundreds of classes, no convergence on ImageNet), and on a separable val set the
NLL has no minimum (the fit stops with large weights). `converged`: L-BFGS's success flag."""

from harness.calibrator import Calibrator, fit_affine


class MatrixScaling(Calibrator):
    def __init__(self, max_iter: int = 2000) -> None:
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        self.max_iter = max_iter

    def fit(self, logits, labels):
        self.weight, self.bias, self.converged = fit_affine(
            logits, labels, diagonal=False, max_iter=self.max_iter
        )

    def transform(self, logits):
        return logits @ self.weight.T + self.bias

    def params(self):
        return {"converged": float(self.converged)}
