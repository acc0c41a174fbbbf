"""Base class of methods/calibrators/ (configured under `calibrators:` in conf/eval/), and
the affine NLL fit that vector and matrix scaling share."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax


class Calibrator:
    """Fitted on ID validation logits and labels, maps logits to calibrated logits.
    `params()` are recorded as rows (e.g. temperature). Hyperparameters arrive as keyword
    arguments of the subclass's __init__."""

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def transform(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict[str, float]:
        return {}


def fit_affine(
    logits: np.ndarray, labels: np.ndarray, diagonal: bool, max_iter: int = 2000
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(W, b, converged) minimising the mean NLL of softmax(logits @ W.T + b) (Guo et al.,
    2017): W diagonal (returned as its diagonal, vector scaling) or full (matrix scaling).
    The NLL is convex in (W, b), so L-BFGS from the identity finds the global minimum where
    one exists; on separable data it does not (the NLL only approaches 0) and the fit stops
    where its relative improvement falls below tolerance, with large weights. `converged` is
    L-BFGS's own success flag (False: max_iter reached or the line search failed)."""
    z = np.asarray(logits, dtype=np.float64)
    rows, y = np.arange(len(z)), np.asarray(labels)
    n, k = z.shape
    w0 = np.ones(k) if diagonal else np.eye(k).ravel()
    x0 = np.concatenate([w0, np.zeros(k)])

    def nll_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = x[:-k], x[-k:]
        out = z * w + b if diagonal else z @ w.reshape(k, k).T + b
        logp = log_softmax(out, axis=1)
        g = np.exp(logp)  # d mean-NLL / d out = (softmax - onehot) / n
        g[rows, y] -= 1.0
        g /= n
        gw = (g * z).sum(axis=0) if diagonal else (g.T @ z).ravel()
        return float(-logp[rows, y].mean()), np.concatenate([gw, g.sum(axis=0)])

    # tolerances: the NLL within ~1e-9 of its minimum (tests compare to 1e-4), in about
    # half the iterations of scipy's tightest settings
    res = minimize(
        nll_and_grad, x0, jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": 1e-6, "ftol": 1e-11},
    )  # fmt: skip
    w = res.x[:-k] if diagonal else res.x[:-k].reshape(k, k)
    return w, res.x[-k:], bool(res.success)
